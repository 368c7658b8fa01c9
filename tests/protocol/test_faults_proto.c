/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Faults a careful user meets (issue #17), through real plugin processes: a second
   plugin on a Home another one serves, and a damaged state file at start. Needs root,
   FUSE and loop devices. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto_client.h"
#include "util.h"

static struct pc_server a, b;

static void
setup (void)
{
  signal (SIGPIPE, SIG_IGN);
  memset (&a, 0, sizeof a);
  memset (&b, 0, sizeof b);
}

static void
teardown (void)
{
  pc_stop (&b);
  pc_stop (&a);
}

TestSuite (faults_proto, .init = setup, .fini = teardown, .timeout = 600);

/* POST BODY to PATH on S; the status, and the Err (or "") into E. */
static int
post (struct pc_server *s, const char *path, const char *body, char *e, size_t cap)
{
  struct pc_response r;

  cr_assert_eq (pc_post (s, path, body, &r), 0, "%s: no response", path);
  const char *err = pc_json_str (&r, "Err");
  snprintf (e, cap, "%s", err ? err : "");
  int status = r.status;
  pc_response_free (&r);
  return status;
}

static void
must (struct pc_server *s, const char *path, const char *body)
{
  char e[4096];
  int status = post (s, path, body, e, sizeof e);
  cr_assert (status == 200 && !e[0], "%s %s: %d %s", path, body, status, e);
}

/* The whole log of S (static buffer). */
static const char *
log_of (const struct pc_server *s)
{
  static char text[1 << 16];
  FILE *f = fopen (s->log, "r");
  size_t n = f ? fread (text, 1, sizeof text - 1, f) : 0;
  if (f)
    fclose (f);
  text[n] = '\0';
  return text;
}

Test (faults_proto, second_plugin_on_a_home_is_refused)
{
  char body[PATH_MAX + 64], e[4096], pid[32], mnt[PATH_MAX + 32];

  cr_assert_eq (pc_start (&a, true), 0, "the first server did not start");
  must (&a, "/GraphDriver.CreateReadWrite",
        "{\"ID\":\"held\",\"Parent\":\"\",\"MountLabel\":\"\"}");
  must (&a, "/GraphDriver.Get", "{\"ID\":\"held\",\"MountLabel\":\"\"}");
  snprintf (mnt, sizeof mnt, "%s/mnt/held", a.home);
  cr_assert (pgd_is_mountpoint (mnt));
  snprintf (pid, sizeof pid, "pid %d", (int)a.pid);

  /* a second plugin, another socket: its Init on the first one's Home is refused */
  cr_assert_eq (pc_start (&b, false), 0, "the second server did not start");
  snprintf (body, sizeof body, "{\"Home\":\"%s\",\"Opts\":[],\"UIDMaps\":[],\"GIDMaps\":[]}",
            a.home);
  int status = post (&b, "/GraphDriver.Init", body, e, sizeof e);
  cr_assert_eq (status, 500, "Init on a Home in use answered %d", status);
  cr_assert (strstr (e, pid) && strstr (e, a.home),
             "the error names neither the Home nor "
             "the holder (%s): %s",
             pid, e);
  cr_assert (strstr (log_of (&b), "adopted") == NULL, "the second plugin adopted a layer");
  /* nothing changed for the first: its layer stays mounted and served */
  cr_assert (pgd_is_mountpoint (mnt), "the refused Init unmounted %s", mnt);
  must (&a, "/GraphDriver.Put", "{\"ID\":\"held\"}");
  must (&a, "/GraphDriver.Get", "{\"ID\":\"held\",\"MountLabel\":\"\"}");

  /* started on that Home (--home), the second plugin exits with the same error */
  int st;
  cr_assert_eq (pc_signal_and_wait (&b, SIGTERM, PC_SAFETY_MS, &st), 0);
  char own_home[PATH_MAX];
  snprintf (own_home, sizeof own_home, "%s", b.home);
  snprintf (b.home, sizeof b.home, "%s", a.home);
  cr_assert_neq (pc_spawn (&b, true), 0, "a second plugin started on a Home in use");
  cr_assert_not (pc_alive (&b), "the second plugin still runs");
  cr_assert (strstr (log_of (&b), pid), "the start error does not name %s: %s", pid,
             pc_log_tail (&b));
  snprintf (b.home, sizeof b.home, "%s", own_home);
  cr_assert (pgd_is_mountpoint (mnt), "the refused start unmounted %s", mnt);

  /* once the first has stopped, the Home is free for the second */
  must (&a, "/GraphDriver.Put", "{\"ID\":\"held\"}");
  cr_assert_eq (pc_signal_and_wait (&a, SIGTERM, PC_SAFETY_MS, &st), 0);
  cr_assert_eq (pc_spawn (&b, false), 0, "the second server did not start again");
  must (&b, "/GraphDriver.Init", body);
  must (&b, "/GraphDriver.Remove", "{\"ID\":\"held\"}");
}

Test (faults_proto, damaged_state_file_does_not_stop_the_start)
{
  char body[PATH_MAX + 64], e[4096];
  static const char *const bad[] = { "{\"Home\":\"/x\",\"Op", "{\"Home\":\"%s\",\"Opts\":[5]}" };

  cr_assert_eq (pc_start (&a, false), 0, "the server did not start");
  snprintf (body, sizeof body, "{\"Home\":\"%s\",\"Opts\":[],\"UIDMaps\":[],\"GIDMaps\":[]}",
            a.home);
  must (&a, "/GraphDriver.Init", body);
  must (&a, "/GraphDriver.Create", "{\"ID\":\"kept\",\"Parent\":\"\",\"MountLabel\":\"\"}");
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    {
      int st;
      char text[PATH_MAX + 64];
      cr_assert_eq (pc_signal_and_wait (&a, SIGTERM, PC_SAFETY_MS, &st), 0);
      snprintf (text, sizeof text, bad[i], a.home);
      FILE *f = fopen (a.state, "w");
      cr_assert_not_null (f);
      fputs (text, f);
      fclose (f);
      /* starts (no exit, no crash), says so, waits for Init */
      cr_assert_eq (pc_spawn (&a, false), 0, "case %zu: no start with a damaged state file", i);
      cr_assert (strstr (log_of (&a), "moved to"), "case %zu: no warning: %s", i, pc_log_tail (&a));
      int status = post (&a, "/GraphDriver.Status", "{}", e, sizeof e);
      cr_assert (status == 500 && strstr (e, "not initialised"), "case %zu: %d %s", i, status, e);
      /* dockerd's Init: the layers on disk are all there */
      must (&a, "/GraphDriver.Init", body);
      struct pc_response r;
      cr_assert_eq (pc_post (&a, "/GraphDriver.Exists", "{\"ID\":\"kept\"}", &r), 0);
      cr_assert (strstr (r.body, "true"), "case %zu: the layer is gone: %s", i, r.body);
      pc_response_free (&r);
    }
}

/* The child of PARENT that serves the socket (its command line has --socket), or 0. */
static pid_t
plugin_child (pid_t parent)
{
  char path[64];
  cleanup_free char *kids = NULL;

  snprintf (path, sizeof path, "/proc/%d/task/%d/children", (int)parent, (int)parent);
  if (pgd_read_file (path, &kids, NULL, NULL) < 0)
    return 0;
  for (char *save = NULL, *tok = strtok_r (kids, " \n", &save); tok;
       tok = strtok_r (NULL, " \n", &save))
    {
      cleanup_free char *cmd = NULL;
      size_t len = 0;
      snprintf (path, sizeof path, "/proc/%s/cmdline", tok);
      if (pgd_read_file (path, &cmd, &len, NULL) < 0)
        continue;
      for (size_t i = 0; i < len; i++)
        if (strcmp (cmd + i, "--socket") == 0)
          return (pid_t)atoi (tok);
        else
          i += strlen (cmd + i);
    }
  return 0;
}

/* Write and fsync DIR/NAME: the data path of a mounted layer works. */
static void
write_synced (const char *dir, const char *name)
{
  char path[PATH_MAX * 2];
  snprintf (path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen (path, "w");
  cr_assert_not_null (f, "open %s", path);
  cr_assert_gt (fputs (name, f), 0);
  cr_assert_eq (fflush (f), 0);
  cr_assert_eq (fsync (fileno (f)), 0, "fsync %s", path);
  cr_assert_eq (fclose (f), 0);
}

Test (faults_proto, supervised_plugin_restarts_and_keeps_mounts)
{
  char mnt[PATH_MAX + 32], pidfile[PATH_MAX + 32];

  cr_assert_eq (pc_start_with (&a, true, "--supervise"), 0, "the server did not start");
  must (&a, "/GraphDriver.CreateReadWrite",
        "{\"ID\":\"live\",\"Parent\":\"\",\"MountLabel\":\"\"}");
  must (&a, "/GraphDriver.Get", "{\"ID\":\"live\",\"MountLabel\":\"\"}");
  snprintf (mnt, sizeof mnt, "%s/mnt/live", a.home);
  write_synced (mnt, "before");
  snprintf (pidfile, sizeof pidfile, "%s/run/live/server.pid", a.home);
  cleanup_free char *line = NULL;
  struct pgd_err err;
  cr_assert_eq (pgd_read_file (pidfile, &line, NULL, &err), 0, "%s", err.msg);
  pid_t image_server = (pid_t)atoi (line);

  /* the plugin (HTTP server and store) dies hard; the supervisor stays */
  pid_t child = plugin_child (a.pid);
  cr_assert_gt (child, 0, "no plugin child under the supervisor %d", (int)a.pid);
  cr_assert_eq (kill (child, SIGKILL), 0);
  pid_t again;
  while ((again = plugin_child (a.pid)) == 0 || again == child)
    usleep (10000);
  struct pc_response r;
  while (pc_post (&a, "/GraphDriver.Capabilities", "{}", &r) < 0 || r.status != 200)
    usleep (10000);
  pc_response_free (&r);

  /* the layer's image server lived on: the mount never went down, writes continue */
  cr_assert_eq (kill (image_server, 0), 0, "the image server %d died", (int)image_server);
  cr_assert (pgd_is_mountpoint (mnt), "%s went down", mnt);
  write_synced (mnt, "after");
  cr_assert (strstr (log_of (&a), "adopted mounted layer live"), "%s", pc_log_tail (&a));
  cr_assert (strstr (log_of (&a), "plugin killed by signal 9"), "%s", pc_log_tail (&a));
  /* the restarted plugin serves it: Put (the adopted reference), Get, Put, Remove */
  must (&a, "/GraphDriver.Put", "{\"ID\":\"live\"}");
  must (&a, "/GraphDriver.Get", "{\"ID\":\"live\",\"MountLabel\":\"\"}");
  char path[PATH_MAX + 64];
  snprintf (path, sizeof path, "%s/after", mnt);
  cr_assert_eq (access (path, F_OK), 0, "%s is lost", path);
  must (&a, "/GraphDriver.Put", "{\"ID\":\"live\"}");
  must (&a, "/GraphDriver.Remove", "{\"ID\":\"live\"}");
  cr_assert_eq (pc_stop (&a), 0, "the supervisor did not stop cleanly: %s", pc_log_tail (&a));
}

/* How many times NEEDLE occurs in S's whole log. */
static int
log_count (const struct pc_server *s, const char *needle)
{
  cleanup_free char *text = NULL;
  int n = 0;

  if (pgd_read_file (s->log, &text, NULL, NULL) < 0)
    return 0;
  for (const char *p = text; (p = strstr (p, needle)) != NULL; p++)
    n++;
  return n;
}

static void
wait_log (const struct pc_server *s, const char *needle)
{
  while (log_count (s, needle) == 0)
    usleep (10000);
}

/* POST BODY to PATH on a connection of its own, wait until S logs WAITING (the call
   waits for the layer), then hang up without reading the answer. */
static void
post_and_hang_up (struct pc_server *s, const char *path, const char *body, const char *waiting)
{
  char req[1024];
  int before = log_count (s, waiting);
  int n = snprintf (req, sizeof req,
                    "POST %s HTTP/1.1\r\nHost: \r\nContent-Type: application/json\r\n"
                    "Content-Length: %zu\r\n\r\n%s",
                    path, strlen (body), body);
  int fd = pc_connect (s);
  cr_assert_geq (fd, 0, "connect");
  cr_assert_eq (pc_send_all (fd, req, (size_t)n), 0, "send %s", path);
  while (log_count (s, waiting) == before)
    usleep (10000);
  close (fd);
}

/* Issue #17: a Get and a Remove that wait for a layer (its idle unmount is stuck on a
   stopped image server) end when their client hangs up, and neither changes anything
   once the unmount finishes: the Get does not mount for a client long gone, the Remove
   does not delete. */
Test (faults_proto, requests_whose_client_hung_up_change_nothing)
{
  char mnt[PATH_MAX + 32], path[PATH_MAX + 64], pidfile[PATH_MAX + 32];
  struct pc_response r;
  struct pgd_err err;

  cr_assert_eq (pc_start (&a, true), 0, "the server did not start");
  must (&a, "/GraphDriver.CreateReadWrite", "{\"ID\":\"L\",\"Parent\":\"\",\"MountLabel\":\"\"}");
  must (&a, "/GraphDriver.Get", "{\"ID\":\"L\",\"MountLabel\":\"\"}");
  snprintf (mnt, sizeof mnt, "%s/mnt/L", a.home);
  write_synced (mnt, "kept");
  /* dirty data: the idle unmount's flush must go through the server */
  snprintf (path, sizeof path, "%s/dirty", mnt);
  FILE *f = fopen (path, "w");
  cr_assert_not_null (f, "open %s", path);
  for (int i = 0; i < 4096; i++)
    cr_assert_gt (fputs ("dirty data, not flushed; dirty data, not flushed; dirty data!!\n", f), 0);
  cr_assert_eq (fclose (f), 0);
  snprintf (pidfile, sizeof pidfile, "%s/run/L/server.pid", a.home);
  cleanup_free char *line = NULL;
  cr_assert_eq (pgd_read_file (pidfile, &line, NULL, &err), 0, "%s", err.msg);
  pid_t server = (pid_t)atoi (line);
  cr_assert_eq (kill (server, SIGSTOP), 0);
  must (&a, "/GraphDriver.Put", "{\"ID\":\"L\"}");
  wait_log (&a, "idle layer L: unmounting"); /* after --linger: stuck on the server */

  post_and_hang_up (&a, "/GraphDriver.Get", "{\"ID\":\"L\",\"MountLabel\":\"\"}",
                    "get layer L: waiting");
  wait_log (&a, "get layer L: the client went away");
  post_and_hang_up (&a, "/GraphDriver.Remove", "{\"ID\":\"L\"}", "remove layer L: waiting");
  wait_log (&a, "remove layer L: the client went away");

  cr_assert_eq (kill (server, SIGCONT), 0);
  wait_log (&a, "unmounted L");
  cr_assert_not (pgd_is_mountpoint (mnt), "the cancelled Get mounted %s", mnt);
  cr_assert_eq (pc_post (&a, "/GraphDriver.Exists", "{\"ID\":\"L\"}", &r), 0);
  json_t *j = pc_json (&r);
  cr_assert (j && json_is_true (json_object_get (j, "Exists")),
             "the cancelled Remove deleted L: %s", r.body);
  json_decref (j);
  pc_response_free (&r);
  /* the layer is whole: a Get now (client present) mounts it with its data */
  must (&a, "/GraphDriver.Get", "{\"ID\":\"L\",\"MountLabel\":\"\"}");
  snprintf (path, sizeof path, "%s/kept", mnt);
  cr_assert_eq (access (path, F_OK), 0, "%s is lost", path);
  must (&a, "/GraphDriver.Put", "{\"ID\":\"L\"}");
  must (&a, "/GraphDriver.Remove", "{\"ID\":\"L\"}");
  cr_assert_eq (pc_stop (&a), 0, "the plugin did not stop cleanly: %s", pc_log_tail (&a));
}
