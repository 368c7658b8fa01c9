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

#include "store/internal.h"
#include "store/layers.h"
#include "store_fixture.h"
#include "util.h"

#define ROUNDS 3
#define FILL_MIB 8 /* dirty data makes the unmount long enough for the other to queue */

static struct tl_store S;
static const struct pgd_ops *ops = &pgd_layers_ops;

static void
setup (void)
{
  /* a long linger: Put leaves the layer mounted, so Remove has an unmount to do */
  S.linger_ms = 600000;
  tl_store_setup (&S, "races");
}

static void
teardown (void)
{
  tl_store_teardown (&S);
}

TestSuite (races, .init = setup, .fini = teardown, .timeout = 600);

/* Create ID, write FILL_MIB of data into it, Put it: it stays mounted, idle and dirty. */
static void
make_idle_layer (const char *id, const char *parent)
{
  tl_create (&S, id, parent, false);
  char *dir = tl_get (&S, id);
  tl_fill (dir, "fill", FILL_MIB, false);
  free (dir);
  tl_put (&S, id);
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
      pthread_mutex_lock (&S.l->lock);
      struct layer *lay = pgd_layer_find (S.l, id, false);
      bool go = (lay && lay->busy) || !pgd_layer_on_disk (S.l, id);
      pthread_mutex_unlock (&S.l->lock);
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
      r->ret = ops->remove (S.l, r->id, &err);
      break;
    case OP_GET:
      r->ret = ops->get (S.l, r->id, NULL, &dir, &err);
      free (dir);
      break;
    case OP_CREATE_CHILD:
      {
        struct pgd_create_req req = { .id = r->child, .parent = r->id };
        r->ret = ops->create (S.l, &req, &err);
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

  cr_assert_eq (ops->exists (S.l, id, &exists, &err), 0, "exists: %s", err.msg);
  cr_assert_not (exists, "layer %s still exists", id);
  snprintf (mnt, sizeof mnt, "%s/mnt/%s", S.home, id);
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
