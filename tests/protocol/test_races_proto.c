/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Two requests on one layer at once through the real binary: Remove/Remove, Remove/Get
   and Remove/Create-child of a layer that its last Put left mounted and dirty, so that
   the first request is still unmounting when the second arrives and waits for it.
   Whichever order the server sees, every answer is a clean success or a clear error,
   the layer ends deleted and unmounted, and the server exits 0 at SIGTERM (a sanitizer
   report in an ASan or TSan build of the server changes that: issue #17's
   use-after-free). Needs root, FUSE and loop devices. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto_client.h"
#include "util.h"

#define ROUNDS 3
#define FILL_MIB 8           /* dirty data: the unmount takes long enough to queue behind */
#define SECOND_DELAY_US 5000 /* the second request leaves a little after the first */

static struct pc_server srv;

PC_SERVER_SUITE (races_proto, srv, .timeout = 600);

/* POST BODY to PATH; the Err of the answer (NULL when none) into ERRBUF's copy. */
static int
post (const char *path, const char *body, char *errbuf, size_t cap, char *dir)
{
  struct pc_response r;

  errbuf[0] = '\0';
  if (pc_post (&srv, path, body, &r) < 0)
    {
      snprintf (errbuf, cap, "%s: no response", path);
      return -1;
    }
  int status = r.status;
  const char *e = pc_json_str (&r, "Err");
  if (e && *e)
    snprintf (errbuf, cap, "%s", e);
  if (dir)
    {
      const char *d = pc_json_str (&r, "Dir");
      snprintf (dir, PATH_MAX, "%s", d ? d : "");
    }
  pc_response_free (&r);
  return status;
}

static void
must (const char *path, const char *body)
{
  char e[4096];
  int status = post (path, body, e, sizeof e, NULL);
  cr_assert (status == 200 && e[0] == '\0', "%s %s: %d %s", path, body, status, e);
}

/* Create ID, fill it, Put it: the server keeps it mounted (linger) with dirty data. */
static void
make_idle_layer (const char *id)
{
  char body[256], e[4096], dir[PATH_MAX], path[PATH_MAX + 16];

  snprintf (body, sizeof body, "{\"ID\":\"%s\",\"Parent\":\"\",\"MountLabel\":\"\"}", id);
  must ("/GraphDriver.CreateReadWrite", body);
  snprintf (body, sizeof body, "{\"ID\":\"%s\",\"MountLabel\":\"\"}", id);
  int status = post ("/GraphDriver.Get", body, e, sizeof e, dir);
  cr_assert (status == 200 && e[0] == '\0' && dir[0] == '/', "Get %s: %d %s", id, status, e);
  snprintf (path, sizeof path, "%s/fill", dir);
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  cr_assert_geq (fd, 0, "open %s", path);
  static char buf[1 << 20];
  memset (buf, 'x', sizeof buf);
  for (int i = 0; i < FILL_MIB; i++)
    cr_assert_eq (write (fd, buf, sizeof buf), (ssize_t)sizeof buf);
  close (fd);
  snprintf (body, sizeof body, "{\"ID\":\"%s\"}", id);
  must ("/GraphDriver.Put", body);
}

struct req
{
  const char *path;
  char body[256];
  bool second;
  int status;
  char err[4096];
};

static void *
req_main (void *arg)
{
  struct req *q = arg;

  if (q->second)
    usleep (SECOND_DELAY_US);
  q->status = post (q->path, q->body, q->err, sizeof q->err, NULL);
  return NULL;
}

/* Send A, then B a moment later, each on its own connection; wait for both answers. */
static void
race (struct req *a, struct req *b)
{
  pthread_t ta, tb;

  b->second = true;
  cr_assert_eq (pthread_create (&ta, NULL, req_main, a), 0);
  cr_assert_eq (pthread_create (&tb, NULL, req_main, b), 0);
  pthread_join (ta, NULL);
  pthread_join (tb, NULL);
}

static void
assert_gone (const char *id)
{
  char body[128], mnt[PATH_MAX + 16];
  struct pc_response r;

  snprintf (body, sizeof body, "{\"ID\":\"%s\"}", id);
  cr_assert_eq (pc_post (&srv, "/GraphDriver.Exists", body, &r), 0);
  json_t *j = pc_json (&r);
  cr_assert (json_is_false (json_object_get (j, "Exists")), "%s still exists: %s", id, r.body);
  json_decref (j);
  pc_response_free (&r);
  snprintf (mnt, sizeof mnt, "%s/mnt/%s", srv.home, id);
  cr_assert_not (pgd_is_mountpoint (mnt), "%s is still mounted", mnt);
}

static void
remove_req (struct req *q, const char *id)
{
  q->path = "/GraphDriver.Remove";
  snprintf (q->body, sizeof q->body, "{\"ID\":\"%s\"}", id);
}

Test (races_proto, remove_races_remove_get_and_create_child)
{
  for (int i = 0; i < ROUNDS; i++)
    {
      struct req a = { 0 }, b = { 0 };

      make_idle_layer ("L");
      remove_req (&a, "L");
      remove_req (&b, "L");
      race (&a, &b);
      cr_assert (a.status == 200 && !a.err[0], "round %d: Remove: %d %s", i, a.status, a.err);
      cr_assert (b.status == 200 && !b.err[0], "round %d: Remove: %d %s", i, b.status, b.err);
      assert_gone ("L");

      make_idle_layer ("L");
      memset (&b, 0, sizeof b);
      b.path = "/GraphDriver.Get";
      snprintf (b.body, sizeof b.body, "{\"ID\":\"L\",\"MountLabel\":\"\"}");
      race (&a, &b);
      cr_assert (a.status == 200 && !a.err[0], "round %d: Remove: %d %s", i, a.status, a.err);
      /* the Get either came first (the Remove then took its mount down) or found nothing */
      cr_assert ((b.status == 200 && !b.err[0]) || (b.status == 500 && strstr (b.err, "layer L")),
                 "round %d: Get: %d %s", i, b.status, b.err);
      assert_gone ("L");

      make_idle_layer ("L");
      memset (&b, 0, sizeof b);
      b.path = "/GraphDriver.Create";
      snprintf (b.body, sizeof b.body, "{\"ID\":\"C\",\"Parent\":\"L\",\"MountLabel\":\"\"}");
      race (&a, &b);
      cr_assert (a.status == 200 && !a.err[0], "round %d: Remove: %d %s", i, a.status, a.err);
      cr_assert ((b.status == 200 && !b.err[0])
                     || (b.status == 500 && strstr (b.err, "parent layer L")),
                 "round %d: Create child: %d %s", i, b.status, b.err);
      assert_gone ("L");
      if (!b.err[0])
        must ("/GraphDriver.Remove", "{\"ID\":\"C\"}");
      assert_gone ("C");
    }
  cr_assert (pc_alive (&srv), "the server died: %s", pc_log_tail (&srv));
  cr_assert_eq (pc_stop (&srv), 0, "the server did not exit cleanly: %s", pc_log_tail (&srv));
}
