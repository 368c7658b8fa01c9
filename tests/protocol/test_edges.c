/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Edges found from outside (issue #16), against the real binary: Cleanup and SIGTERM
   while a Diff is still streaming (read to its end, or stalled), and a second Init
   with another Home while layers of the first are mounted. Needs root, FUSE and loop
   devices. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "leaks.h"
#include "proto_client.h"
#include "util.h"

/* Bigger than the Diff pipe (1 MiB) and both socket buffers: a client that stops
   reading leaves the Diff worker blocked with its layer held. */
#define BIG_FILE (24u << 20)

static struct pc_server srv;

PC_SERVER_SUITE (edges, srv);

/* POST BODY to PATH; expect 200; the body into OUT (CAP bytes) when OUT is not NULL. */
static void
ok (const char *path, const char *body, char *out, size_t cap)
{
  struct pc_response r;

  cr_assert_eq (pc_post (&srv, path, body, &r), 0, "POST %s: no response\n%s", path,
                pc_log_tail (&srv));
  cr_assert_eq (r.status, 200, "%s %s: %d %s\n%s", path, body, r.status, r.body ? r.body : "",
                pc_log_tail (&srv));
  if (out)
    snprintf (out, cap, "%s", r.body ? r.body : "");
  pc_response_free (&r);
}

/* POST with {"ID": ID}; expect 200. */
static void
ok_id (const char *path, const char *id)
{
  char body[PGD_ID_MAX + 16];

  snprintf (body, sizeof body, "{\"ID\":\"%s\"}", id);
  ok (path, body, NULL, 0);
}

/* Init with HOME; the status and {"Err"} text into ERR_OUT (CAP bytes). */
static int
init_home (const char *home, char *err_out, size_t cap)
{
  char body[PATH_MAX + 96];
  struct pc_response r;

  snprintf (body, sizeof body, "{\"Home\":\"%s\",\"Opts\":[],\"UIDMaps\":null,\"GIDMaps\":null}",
            home);
  cr_assert_eq (pc_post (&srv, "/GraphDriver.Init", body, &r), 0, "Init: no response");
  int status = r.status;
  const char *msg = pc_json_str (&r, "Err");
  snprintf (err_out, cap, "%s", msg ? msg : "");
  pc_response_free (&r);
  return status;
}

/* Create base layer ID and write LEN bytes of a pattern into its file "data". */
static void
make_layer (const char *id, size_t len)
{
  char out[PATH_MAX + 32], path[PATH_MAX + 64];
  static char block[1 << 16];

  ok_id ("/GraphDriver.Create", id);
  ok_id ("/GraphDriver.Get", id);
  snprintf (out, sizeof out, "%s/mnt/%s", srv.home, id);
  snprintf (path, sizeof path, "%s/data", out);
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  cr_assert_geq (fd, 0, "open %s: %m", path);
  for (size_t i = 0; i < sizeof block; i++)
    block[i] = (char)(i * 7 + 3);
  for (size_t done = 0; done < len; done += sizeof block)
    cr_assert_eq (write (fd, block, sizeof block), (ssize_t)sizeof block);
  close (fd);
  ok_id ("/GraphDriver.Put", id);
}

/* A Diff of ID against no parent, its head read; the connection is returned. */
static int
open_diff (const char *id, struct pc_reader *rd)
{
  char req[512], body[PGD_ID_MAX + 16];
  struct pc_response head;
  int fd = pc_connect (&srv);
  int n;

  cr_assert_geq (fd, 0);
  snprintf (body, sizeof body, "{\"ID\":\"%s\"}", id);
  n = snprintf (req, sizeof req,
                "POST /GraphDriver.Diff HTTP/1.1\r\nHost: \r\nContent-Length: %zu\r\n\r\n%s",
                strlen (body), body);
  cr_assert_eq (pc_send_all (fd, req, (size_t)n), 0);
  cr_assert_eq (pc_read_head (rd, fd, &head), 0, "Diff: no head\n%s", pc_log_tail (&srv));
  cr_assert_eq (head.status, 200, "Diff: %d", head.status);
  pc_response_free (&head);
  return fd;
}

static bool
mounted (const char *id)
{
  char dir[PATH_MAX + 32];

  snprintf (dir, sizeof dir, "%s/mnt/%s", srv.home, id);
  return pgd_is_mountpoint (dir);
}

/* The server's log contains TEXT. */
static bool
logged (const char *text)
{
  char cmd[PATH_MAX + 128];

  snprintf (cmd, sizeof cmd, "grep -qF -- '%s' '%s'", text, srv.log);
  return system (cmd) == 0;
}

/* A Diff read to its very end, then Cleanup at once: the answer comes only after the
   Diff has let the layer go, and the layer is then unmounted. */
Test (edges, cleanup_after_a_diff_read_to_its_end)
{
  static char buf[1 << 16];

  make_layer ("small", 1 << 16);
  for (int round = 0; round < 5; round++)
    {
      struct pc_reader rd;
      int fd = open_diff ("small", &rd);
      ssize_t n;
      while ((n = pc_read_chunk (&rd, buf, sizeof buf)) > 0)
        ;
      cr_assert_eq (n, 0, "round %d: the Diff was cut", round);
      ok ("/GraphDriver.Cleanup", "{}", NULL, 0);
      cr_assert_not (mounted ("small"), "round %d: Cleanup answered with the layer mounted", round);
      close (fd);
    }
  cr_assert_eq (pc_stop (&srv), 0, "the server did not exit cleanly on SIGTERM");
}

/* A client that stops reading a Diff: Cleanup waits a bounded time, cuts that stream
   (logged), and answers with the layer unmounted. */
Test (edges, cleanup_cuts_a_stalled_diff)
{
  static char buf[1 << 16];
  struct pc_reader rd;

  make_layer ("big", BIG_FILE);
  int fd = open_diff ("big", &rd);
  cr_assert_gt (pc_read_chunk (&rd, buf, sizeof buf), 0, "no first chunk");
  cr_assert (mounted ("big"), "the Diff holds the layer mounted");
  ok ("/GraphDriver.Cleanup", "{}", NULL, 0);
  cr_assert_not (mounted ("big"), "Cleanup answered with the layer mounted");
  cr_assert (logged ("the Diff of big is still streaming; cutting its connection"),
             "the cut is not logged:\n%s", pc_log_tail (&srv));
  ssize_t n;
  while ((n = pc_read_chunk (&rd, buf, sizeof buf)) > 0)
    ;
  cr_assert_lt (n, 0, "a cut Diff must end without its final chunk");
  close (fd);
  cr_assert_eq (pc_stop (&srv), 0, "the server did not exit cleanly on SIGTERM");
}

/* SIGTERM with a stalled Diff: the stream is cut, the server exits 0, and nothing of
   the layer stays mounted or served. */
Test (edges, sigterm_cuts_a_stalled_diff)
{
  static char buf[1 << 16];
  char found[4096];
  struct pc_reader rd;
  int status = 0;

  make_layer ("big", BIG_FILE);
  int fd = open_diff ("big", &rd);
  cr_assert_gt (pc_read_chunk (&rd, buf, sizeof buf), 0, "no first chunk");
  cr_assert_eq (pc_signal_and_wait (&srv, SIGTERM, PC_SAFETY_MS, &status), 0,
                "the server did not exit");
  cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "status %d\n%s", status,
             pc_log_tail (&srv));
  close (fd);
  cr_assert (logged ("shutdown: the Diff of big is still streaming"), "the cut is not logged:\n%s",
             pc_log_tail (&srv));
  cr_assert_eq (lk_mounts_under (srv.dir, found, sizeof found), 0, "left mounted: %s", found);
  cr_assert_eq (lk_loops_under (srv.dir, found, sizeof found), 0, "loop devices left: %s", found);
}

/* Init with another Home while a layer of the first is held: refused, naming the layer
   and both Homes; nothing changes. Once it is released, the Init moves: the old
   Home's idle mounts are taken down and the new Home is served. */
Test (edges, second_init_with_another_home)
{
  char other[PATH_MAX], msg[1024], status[4096], found[4096];
  char old_mnt[PATH_MAX + 32];

  snprintf (other, sizeof other, "%s/home2", srv.dir);
  snprintf (old_mnt, sizeof old_mnt, "%s/mnt/x", srv.home);
  ok_id ("/GraphDriver.Create", "x");
  ok_id ("/GraphDriver.Get", "x");

  cr_assert_eq (init_home (other, msg, sizeof msg), 500,
                "Init of another Home must be refused "
                "while a layer is held: %s",
                msg);
  cr_assert (strstr (msg, srv.home) && strstr (msg, other) && strstr (msg, "x"),
             "the refusal names the Homes and the layer: %s", msg);
  ok ("/GraphDriver.Status", "{}", status, sizeof status);
  cr_assert (strstr (status, srv.home) != NULL, "Home changed after a refused Init: %s", status);
  cr_assert (mounted ("x"), "the held layer was taken down by a refused Init");
  ok_id ("/GraphDriver.Get", "x");
  ok_id ("/GraphDriver.Put", "x");
  ok_id ("/GraphDriver.Put", "x");
  /* now idle: lingering (--linger) or already unmounted, either must move */

  cr_assert_eq (init_home (other, msg, sizeof msg), 200, "Init once nothing is held: %s", msg);
  cr_assert_not (pgd_is_mountpoint (old_mnt), "the old Home's idle mount stayed");
  char old_home[PATH_MAX];
  snprintf (old_home, sizeof old_home, "%s", srv.home);
  cr_assert_eq (lk_mounts_under (old_home, found, sizeof found), 0, "left mounted: %s", found);
  cr_assert_eq (lk_loops_under (old_home, found, sizeof found), 0, "loop devices: %s", found);
  ok ("/GraphDriver.Status", "{}", status, sizeof status);
  cr_assert (strstr (status, other) != NULL, "Status after the move: %s", status);
  ok ("/GraphDriver.Cleanup", "{}", NULL, 0);
  cr_assert_eq (pc_stop (&srv), 0, "the server did not exit cleanly on SIGTERM");
}

/* A --storage-opt size grow (libploop's forced check then fixes the CIF_Empty flag it
   cleared) leaves no bare library line in the log: every mention of it carries our
   context. */
Test (edges, grow_logs_no_bare_library_error)
{
  char line[4096];

  ok ("/GraphDriver.CreateReadWrite", "{\"ID\":\"grown\",\"StorageOpt\":{\"size\":\"20G\"}}", NULL,
      0);
  ok_id ("/GraphDriver.Get", "grown");
  ok_id ("/GraphDriver.Put", "grown");
  ok_id ("/GraphDriver.Remove", "grown");
  FILE *f = fopen (srv.log, "r");
  cr_assert_not_null (f);
  while (fgets (line, sizeof line, f))
    {
      cr_assert (strncmp (line, "Error in", 8) != 0, "a bare library message: %s", line);
      cr_assert (strstr (line, "CIF_Empty") == NULL || strstr (line, "check grown delta"),
                 "a library message without its context: %s", line);
    }
  fclose (f);
  cr_assert_eq (pc_stop (&srv), 0, "the server did not exit cleanly on SIGTERM");
}

/* Delta files the image of layer ID lists (its DiskDescriptor.xml's <Image> entries). */
static int
deltas_of (const char *id)
{
  char path[PATH_MAX + 64];
  cleanup_free char *dd = NULL;
  struct pgd_err err;
  int n = 0;

  snprintf (path, sizeof path, "%s/layers/%s/DiskDescriptor.xml", srv.home, id);
  cr_assert_eq (pgd_read_file (path, &dd, NULL, &err), 0, "%s", err.msg);
  for (const char *p = dd; (p = strstr (p, "<Image>")) != NULL; p++)
    n++;
  return n;
}

/* Deeper than libploop's 127 deltas: base layers own one delta, so a chain of 127
   layers fits (dockerd's 125 + -init + container); the 128th is flattened into one
   delta, and a chain of 140 layers reads every layer's file at its top. */
Test (edges, chain_of_140_layers_reads_correctly)
{
  enum
  {
    DEPTH = 140
  };
  char id[32], parent[32], body[128], dir[PATH_MAX + 32], path[PATH_MAX + 64], text[32];

  for (int i = 1; i <= DEPTH; i++)
    {
      snprintf (id, sizeof id, "d%d", i);
      if (i == 1)
        snprintf (body, sizeof body, "{\"ID\":\"%s\"}", id);
      else
        snprintf (body, sizeof body, "{\"ID\":\"%s\",\"Parent\":\"%s\"}", id, parent);
      ok ("/GraphDriver.Create", body, NULL, 0);
      ok_id ("/GraphDriver.Get", id);
      snprintf (dir, sizeof dir, "%s/mnt/%s", srv.home, id);
      snprintf (path, sizeof path, "%s/f%d", dir, i);
      snprintf (text, sizeof text, "layer %d\n", i);
      struct pgd_err err;
      cr_assert_eq (pgd_write_file_atomic (path, text, strlen (text), &err), 0, "%s", err.msg);
      snprintf (path, sizeof path, "%s/top", dir);
      cr_assert_eq (pgd_write_file_atomic (path, text, strlen (text), &err), 0, "%s", err.msg);
      ok_id ("/GraphDriver.Put", id);
      snprintf (parent, sizeof parent, "%s", id);
    }
  cr_assert_eq (deltas_of ("d1"), 1, "a base layer owns one delta");
  cr_assert_eq (deltas_of ("d127"), 127, "no flattening up to libploop's limit");
  cr_assert_eq (deltas_of ("d128"), 1, "the 128th layer is flattened");
  cr_assert_eq (deltas_of ("d140"), 13);
  cr_assert (logged ("parent d127 has 127 deltas"), "the flattening is not logged");
  /* the copied base and the flattened layer are sound ploop images (closed: not mounted) */
  char bin[PATH_MAX], cmd[3 * PATH_MAX];
  cr_assert_eq (pc_binary (bin), 0);
  for (int i = 0; i < 2; i++)
    {
      snprintf (cmd, sizeof cmd, "'%s' check '%s/layers/%s' >/dev/null 2>&1", bin, srv.home,
                i == 0 ? "d1" : "d128");
      cr_assert_eq (system (cmd), 0, "%s", cmd);
    }

  ok_id ("/GraphDriver.Get", "d140");
  snprintf (dir, sizeof dir, "%s/mnt/d140", srv.home);
  for (int i = 1; i <= DEPTH; i++)
    {
      cleanup_free char *got = NULL;
      struct pgd_err err;
      snprintf (path, sizeof path, "%s/f%d", dir, i);
      snprintf (text, sizeof text, "layer %d\n", i);
      cr_assert_eq (pgd_read_file (path, &got, NULL, &err), 0, "%s", err.msg);
      cr_assert_str_eq (got, text, "%s", path);
    }
  cleanup_free char *top = NULL;
  struct pgd_err err;
  snprintf (path, sizeof path, "%s/top", dir);
  cr_assert_eq (pgd_read_file (path, &top, NULL, &err), 0, "%s", err.msg);
  cr_assert_str_eq (top, "layer 140\n");
  ok_id ("/GraphDriver.Put", "d140");
  cr_assert_eq (pc_stop (&srv), 0, "the server did not exit cleanly on SIGTERM");
}
