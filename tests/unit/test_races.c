/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Two requests on one layer at once, through the store in process on the real engine:
   Remove/Remove, Remove/Get and Remove/Create-child of a mounted layer. The second
   request waits on the layer's claim while the first unmounts it; it must wake on a
   live object (issue #17: it woke on the struct the Remove had freed). Meant for the
   ASan and TSan builds as much as for the plain one. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/layers.h"
#include "store/store.h"
#include "util.h"

#define ROUNDS 3
#define FILL_MIB 8 /* dirty data makes the unmount long enough for the other to queue */

static char tmp[PATH_MAX];
static char home[PATH_MAX + 16];
static char state[PATH_MAX + 16];
static char exe[PATH_MAX];
static struct pgd_layers *L;
static const struct pgd_ops *ops = &pgd_layers_ops;

static void
setup (void)
{
  const char *b = getenv ("PGD_BUILD");
  char *r = realpath (b ? b : "build", NULL);
  cr_assert_not_null (r, "build dir");
  snprintf (exe, sizeof exe, "%s/ploop-graphdriver", r);
  free (r);
  snprintf (tmp, sizeof tmp, "/var/tmp/pgd-races.XXXXXX");
  cr_assert_not_null (mkdtemp (tmp));
  snprintf (home, sizeof home, "%s/home", tmp);
  snprintf (state, sizeof state, "%s/state.json", tmp);
  /* a long linger: Put leaves the layer mounted, so Remove has an unmount to do */
  struct pgd_layers_config cfg
      = { .state_file = state, .engine = "user", .exe = exe, .linger_ms = 600000 };
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_layers_open (&L, &cfg, &err), 0, "open: %s", err.msg);
  struct pgd_init_req req = { .home = home };
  cr_assert_eq (ops->init (L, &req, &err), 0, "init: %s", err.msg);
}

static void
teardown (void)
{
  struct pgd_err err;
  if (L)
    {
      pgd_layers_shutdown (L);
      pgd_layers_close (L);
      L = NULL;
    }
  char cmd[PATH_MAX * 2];
  snprintf (cmd, sizeof cmd,
            "awk '{print $5}' /proc/self/mountinfo | grep '^%s/' | sort -r | "
            "xargs -r -n1 umount -l 2>/dev/null; true",
            tmp);
  if (system (cmd) != 0)
    fprintf (stderr, "cleanup of mounts failed\n");
  if (pgd_rm_rf (tmp, &err) < 0)
    fprintf (stderr, "cleanup: %s\n", err.msg);
}

TestSuite (races, .init = setup, .fini = teardown, .timeout = 600);

/* Create ID, write FILL_MIB of data into it, Put it: it stays mounted, idle and dirty. */
static void
make_idle_layer (const char *id, const char *parent)
{
  struct pgd_create_req req = { .id = id, .parent = parent };
  struct pgd_err err = { 0 };
  char *dir = NULL;

  cr_assert_eq (ops->create (L, &req, &err), 0, "create %s: %s", id, err.msg);
  cr_assert_eq (ops->get (L, id, NULL, &dir, &err), 0, "get %s: %s", id, err.msg);
  char path[PATH_MAX * 2];
  snprintf (path, sizeof path, "%s/fill", dir);
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  cr_assert_geq (fd, 0, "open %s", path);
  static char buf[1 << 20];
  memset (buf, 'x', sizeof buf);
  for (int i = 0; i < FILL_MIB; i++)
    cr_assert_eq (write (fd, buf, sizeof buf), (ssize_t)sizeof buf);
  close (fd);
  free (dir);
  cr_assert_eq (ops->put (L, id, &err), 0, "put %s: %s", id, err.msg);
}

enum op
{
  OP_REMOVE,
  OP_GET,
  OP_CREATE_CHILD,
};

struct racer
{
  enum op op;
  const char *id;
  const char *child;
  bool second; /* start once the other racer holds the layer's claim */
  int ret;
  int errnum;
  char msg[512];
};

/* Wait until ID's entry is claimed by the other racer (or already gone from disk). */
static void
wait_claimed (const char *id)
{
  for (;;)
    {
      pthread_mutex_lock (&L->lock);
      struct layer *lay = pgd_layer_find (L, id, false);
      bool go = (lay && lay->busy) || !pgd_layer_on_disk (L, id);
      pthread_mutex_unlock (&L->lock);
      if (go)
        return;
      usleep (100);
    }
}

static void *
racer_main (void *arg)
{
  struct racer *r = arg;
  struct pgd_err err = { 0 };
  char *dir = NULL;

  if (r->second)
    wait_claimed (r->id);
  switch (r->op)
    {
    case OP_REMOVE:
      r->ret = ops->remove (L, r->id, &err);
      break;
    case OP_GET:
      r->ret = ops->get (L, r->id, NULL, &dir, &err);
      free (dir);
      break;
    case OP_CREATE_CHILD:
      {
        struct pgd_create_req req = { .id = r->child, .parent = r->id };
        r->ret = ops->create (L, &req, &err);
      }
      break;
    }
  r->errnum = err.errnum;
  snprintf (r->msg, sizeof r->msg, "%s", r->ret < 0 ? err.msg : "");
  return NULL;
}

/* Run A, then B while A holds the layer's claim, so that B waits on it. */
static void
race (struct racer *a, struct racer *b)
{
  pthread_t ta, tb;

  b->second = true;
  cr_assert_eq (pthread_create (&ta, NULL, racer_main, a), 0);
  cr_assert_eq (pthread_create (&tb, NULL, racer_main, b), 0);
  pthread_join (ta, NULL);
  pthread_join (tb, NULL);
}

static void
assert_gone (const char *id)
{
  bool exists = true;
  struct pgd_err err = { 0 };
  char mnt[PATH_MAX * 2];

  cr_assert_eq (ops->exists (L, id, &exists, &err), 0, "exists: %s", err.msg);
  cr_assert_not (exists, "layer %s still exists", id);
  snprintf (mnt, sizeof mnt, "%s/mnt/%s", home, id);
  cr_assert_not (pgd_is_mountpoint (mnt), "%s still mounted", mnt);
}

Test (races, remove_remove)
{
  for (int i = 0; i < ROUNDS; i++)
    {
      make_idle_layer ("L", NULL);
      struct racer a = { .op = OP_REMOVE, .id = "L" }, b = a;
      race (&a, &b);
      cr_assert_eq (a.ret, 0, "round %d: first remove: %s", i, a.msg);
      cr_assert_eq (b.ret, 0, "round %d: second remove: %s", i, b.msg);
      assert_gone ("L");
    }
}

Test (races, remove_get)
{
  for (int i = 0; i < ROUNDS; i++)
    {
      make_idle_layer ("L", NULL);
      struct racer a = { .op = OP_REMOVE, .id = "L" }, b = { .op = OP_GET, .id = "L" };
      race (&a, &b);
      cr_assert_eq (a.ret, 0, "round %d: remove: %s", i, a.msg);
      cr_assert_eq (b.ret, -1, "round %d: a Get after the Remove found the layer", i);
      cr_assert_eq (b.errnum, ENOENT, "round %d: get: %s", i, b.msg);
      assert_gone ("L");
    }
}

Test (races, remove_create_child)
{
  for (int i = 0; i < ROUNDS; i++)
    {
      make_idle_layer ("P", NULL);
      struct racer a = { .op = OP_REMOVE, .id = "P" },
                   b = { .op = OP_CREATE_CHILD, .id = "P", .child = "C" };
      race (&a, &b);
      cr_assert_eq (a.ret, 0, "round %d: remove: %s", i, a.msg);
      assert_gone ("P");
      cr_assert_eq (b.ret, -1, "round %d: a child of a removed parent was created", i);
      cr_assert_eq (b.errnum, ENOENT, "round %d: create child: %s", i, b.msg);
      assert_gone ("C");
    }
}
