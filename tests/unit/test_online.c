/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Online snapshots of a served image (engine/chain_snap.c, engine/snap.c,
   store/online.c): the chain switched to a new top while served, read back against a
   model before and after; the parent's image closed cleanly and unchanged, the child's
   valid, also when the process dies around the switch; the store's Create of a child
   of an idle parent handing the mount over. */
#include "ploop_fixture.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include "driver.h"
#include "engine/chain.h"
#include "engine/delta.h"
#include "engine/image.h"
#include "store/internal.h"
#include "store/layers.h"
#include "store_fixture.h"
#include "util.h"

#define DISK (64ULL << 20)
#define CB (32768ULL) /* 64-sector clusters */

static char dir[PATH_MAX], dd[PATH_MAX], child[PATH_MAX], cdd[PATH_MAX];
static unsigned char *model, *parent_model;
static unsigned rng_state;

static void
setup (void)
{
  fx_tmpdir (dir, sizeof dir, "online");
  snprintf (dd, sizeof dd, "%s/" FX_DD, dir);
  snprintf (child, sizeof child, "%s/child", dir);
  snprintf (cdd, sizeof cdd, "%s/" FX_DD, child);
  cr_assert_eq (mkdir (child, 0700), 0);
  model = calloc (1, DISK);
  parent_model = calloc (1, DISK);
  cr_assert (model && parent_model);
  rng_state = 4242;
}

static void
teardown (void)
{
  free (model);
  free (parent_model);
  fx_sh ("rm -rf '%s'", dir);
}

TestSuite (online, .init = setup, .fini = teardown, .timeout = 600);

static unsigned
rnd (void)
{
  rng_state = rng_state * 1103515245u + 12345u;
  return rng_state >> 8;
}

static void
put (struct pgd_chain *c, uint64_t off, size_t len, unsigned seed)
{
  struct pgd_err err = { 0 };
  unsigned char *buf = NULL;

  cr_assert_eq (posix_memalign ((void **)&buf, 4096, len ? len : 1), 0);
  fx_pattern (buf, len, off, seed);
  cr_assert_eq (pgd_chain_write (c, buf, len, off, &err), 0, "write: %s", err.msg);
  memcpy (model + off, buf, len);
  free (buf);
}

static void
random_writes (struct pgd_chain *c, unsigned n, unsigned seed)
{
  for (unsigned i = 0; i < n; i++)
    {
      uint64_t off = (uint64_t)rnd () % DISK;
      size_t len = 1 + rnd () % (3 * CB);
      if (rnd () % 2 == 0)
        {
          off -= off % 4096;
          len = (len + 4095) / 4096 * 4096;
        }
      if (off + len > DISK)
        len = DISK - off;
      put (c, off, len, seed + i);
    }
}

static void
verify (struct pgd_chain *c, const unsigned char *want, const char *when)
{
  size_t chunk = (1 << 20) + 4567;
  unsigned char *buf = NULL;
  struct pgd_err err = { 0 };

  cr_assert_eq (posix_memalign ((void **)&buf, 4096, chunk), 0);
  for (uint64_t off = 0; off < DISK; off += chunk)
    {
      size_t n = DISK - off < chunk ? DISK - off : chunk;
      cr_assert_eq (pgd_chain_read (c, buf, n, off, &err), 0, "%s", err.msg);
      cr_assert_eq (memcmp (buf, want + off, n), 0, "%s: differs in %llu+%zu", when,
                    (unsigned long long)off, n);
    }
  free (buf);
}

static struct pgd_chain *
open_chain (const char *path, unsigned flags)
{
  struct pgd_chain *c = NULL;
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_chain_open (&c, path, flags, &err), 0, "%s", err.msg);
  return c;
}

static bool
top_in_use (const char *path)
{
  struct pgd_err err = { 0 };
  bool in_use = true;
  cr_assert_eq (pgd_chain_top_in_use (path, &in_use, &err), 0, "%s", err.msg);
  return in_use;
}

/* A served chain with data written and flushed, switched onto the child's new top. */
static struct pgd_chain *
served_then_snapshot (void)
{
  char top[PATH_MAX];
  struct pgd_err err = { 0 };

  fx_create_image (dir, DISK, 64);
  fx_snapshot (dir);
  struct pgd_chain *c = open_chain (dd, 0);
  random_writes (c, 60, 1);
  /* writes not flushed by the caller: the snapshot's own flush makes them the parent's */
  cr_assert_eq (pgd_image_clone_served (dir, child, top, sizeof top, &err), 0, "%s", err.msg);
  cr_assert_eq (pgd_chain_snapshot (c, top, cdd, &err), 0, "%s", err.msg);
  memcpy (parent_model, model, DISK);
  cr_expect_eq (pgd_chain_levels (c), 3);
  return c;
}

Test (online, snapshot_of_served_chain_reads_model)
{
  struct pgd_err err = { 0 };
  struct pgd_chain *c = served_then_snapshot ();

  cr_expect (!top_in_use (dd), "the parent's top is still in use after the snapshot");
  verify (c, model, "right after the snapshot");
  random_writes (c, 60, 100);
  put (c, 0, CB, 7); /* overwrite of a cluster the parent's top maps: copy up */
  verify (c, model, "after writes into the new top");
  cr_assert_eq (pgd_chain_close (c, &err), 0, "%s", err.msg);

  /* the parent: unchanged, closed cleanly, valid for libploop and QEMU */
  c = open_chain (dd, PGD_CHAIN_RO);
  verify (c, parent_model, "the parent afterwards");
  cr_assert_eq (pgd_chain_close (c, &err), 0, "%s", err.msg);
  fx_check_deltas (dir);
  /* the child: the chain as a clone describes it, holding the writes */
  cr_expect (!top_in_use (cdd));
  c = open_chain (cdd, PGD_CHAIN_RO);
  verify (c, model, "the child afterwards");
  cr_assert_eq (pgd_chain_close (c, &err), 0, "%s", err.msg);
  cr_expect_eq (pgd_image_check (child, false, &err), 0, "%s", err.msg);
  fx_check_deltas (child);
}

Test (online, crash_after_switch_leaves_valid_images)
{
  struct pgd_err err = { 0 };
  struct pgd_chain *c = served_then_snapshot ();

  random_writes (c, 30, 200);
  cr_assert_eq (pgd_chain_flush (c, &err), 0, "%s", err.msg);
  unsigned char *flushed = malloc (DISK);
  memcpy (flushed, model, DISK);
  random_writes (c, 10, 300); /* never flushed */
  pgd_chain_abandon (c);      /* as a kill -9 leaves it */

  cr_expect (!top_in_use (dd), "the parent's top was left in use");
  c = open_chain (dd, PGD_CHAIN_RO);
  verify (c, parent_model, "the parent after the crash");
  cr_assert_eq (pgd_chain_close (c, &err), 0, "%s", err.msg);
  fx_check_deltas (dir);
  /* the child's top is in use: the repair makes it valid with the flushed data */
  cr_expect (top_in_use (cdd));
  cr_assert_eq (pgd_image_check (child, true, &err), 0, "%s", err.msg);
  cr_expect (!top_in_use (cdd));
  c = open_chain (cdd, PGD_CHAIN_RO);
  unsigned char *buf = malloc (DISK);
  cr_assert_eq (pgd_chain_read (c, buf, DISK, 0, &err), 0, "%s", err.msg);
  /* every byte is the flushed one or the later (unflushed) one, cluster by cluster */
  for (uint64_t off = 0; off < DISK; off += CB)
    cr_assert (memcmp (buf + off, flushed + off, CB) == 0
                   || memcmp (buf + off, model + off, CB) == 0,
               "cluster at %llu is neither flushed nor later data", (unsigned long long)off);
  free (buf);
  free (flushed);
  cr_assert_eq (pgd_chain_close (c, &err), 0, "%s", err.msg);
}

Test (online, failed_flush_refuses_the_switch)
{
  char top[PATH_MAX];
  struct pgd_err err = { 0 };

  fx_create_image (dir, DISK, 64);
  fx_snapshot (dir);
  struct pgd_chain *c = open_chain (dd, 0);
  random_writes (c, 20, 1);
  cr_assert_eq (pgd_image_clone_served (dir, child, top, sizeof top, &err), 0, "%s", err.msg);
  pgd_chain_inject_fault (c, PGD_CHAIN_FAULT_SYNC, 1);
  cr_expect_lt (pgd_chain_snapshot (c, top, cdd, &err), 0);
  cr_expect_eq (pgd_chain_levels (c), 2, "the chain switched all the same");
  /* the old top stays the top, in use; the image goes through a check next time */
  cr_expect (top_in_use (dd));
  pgd_chain_abandon (c);
  /* the engine empties the child's staging directory after a failed switch */
  fx_sh ("rm -rf '%s'", child);
  cr_assert_eq (pgd_image_check (dir, true, &err), 0, "%s", err.msg);
  fx_check_deltas (dir);
}

Test (online, snapshot_refuses_a_wrong_top)
{
  char top[PATH_MAX], other[PATH_MAX];
  struct pgd_err err = { 0 };

  fx_create_image (dir, DISK, 64);
  fx_snapshot (dir);
  struct pgd_chain *c = open_chain (dd, 0);
  random_writes (c, 10, 1);
  cr_assert_eq (pgd_image_clone_served (dir, child, top, sizeof top, &err), 0, "%s", err.msg);
  /* a delta of another size */
  snprintf (other, sizeof other, "%s/other.hdd", dir);
  cr_assert_eq (pgd_delta_create_thin (other, DISK / 512 * 2, 64, &err), 0, "%s", err.msg);
  cr_expect_lt (pgd_chain_snapshot (c, other, cdd, &err), 0);
  cr_expect_eq (err.errnum, EINVAL, "%s", err.msg);
  verify (c, model, "after a refused switch");
  cr_expect (top_in_use (dd));
  cr_assert_eq (pgd_chain_snapshot (c, top, cdd, &err), 0, "%s", err.msg);
  verify (c, model, "after the switch");
  cr_assert_eq (pgd_chain_close (c, &err), 0, "%s", err.msg);
}

/* ---- the store: Create of a child of an idle parent ------------------------------- */

static struct tl_store S;
static const struct pgd_ops *ops = &pgd_layers_ops;

static void
store_setup (void)
{
  setenv ("PGD_TRACK_VERIFY", "1", 1);    /* every tracked diff checked against the full one */
  setenv ("PGD_ONLINE_SNAPSHOT", "1", 1); /* off by default */
  S.linger_ms = 600000;                   /* idle mounts stay until the test is done */
  tl_store_setup (&S, "online-store");
}

static void
store_teardown (void)
{
  tl_store_teardown (&S);
}

TestSuite (online_store, .init = store_setup, .fini = store_teardown, .timeout = 600);

static void
write_text (const char *d, const char *name, const char *text)
{
  char path[PATH_MAX * 2];
  snprintf (path, sizeof path, "%s/%s", d, name);
  FILE *f = fopen (path, "w");
  cr_assert_not_null (f, "%s", path);
  fputs (text, f);
  cr_assert_eq (fclose (f), 0);
}

static bool
has_text (const char *d, const char *name, const char *text)
{
  char path[PATH_MAX * 2], buf[256] = { 0 };
  snprintf (path, sizeof path, "%s/%s", d, name);
  FILE *f = fopen (path, "r");
  if (f == NULL)
    return false;
  size_t n = fread (buf, 1, sizeof buf - 1, f);
  fclose (f);
  buf[n] = '\0';
  return strcmp (buf, text) == 0;
}

static bool
mounted (const char *id)
{
  char path[PATH_MAX * 2];
  snprintf (path, sizeof path, "%s/mnt/%s", S.home, id);
  return pgd_is_mountpoint (path);
}

/* A container's -init layer P, written and Put (idle), then its container layer X. */
static void
make_idle_parent (void)
{
  tl_create (&S, "base", NULL, false);
  char *d = tl_get (&S, "base");
  write_text (d, "image-file", "from the image\n");
  tl_put (&S, "base");
  free (d);
  tl_create (&S, "p", "base", true);
  d = tl_get (&S, "p");
  write_text (d, "init-file", "written by init\n");
  char etc[PATH_MAX * 2];
  snprintf (etc, sizeof etc, "%s/etc", d);
  cr_assert_eq (mkdir (etc, 0755), 0);
  tl_put (&S, "p");
  free (d);
  cr_assert (mounted ("p"), "the parent is not idle");
}

/* The image server of mounted layer ID (its pid file), 0 when none. */
static long
server_of (const char *id)
{
  char path[PATH_MAX * 2];
  long pid = 0;
  snprintf (path, sizeof path, "%s/run/%s/server.pid", S.home, id);
  FILE *f = fopen (path, "r");
  if (f == NULL)
    return 0;
  if (fscanf (f, "%ld", &pid) != 1)
    pid = 0;
  fclose (f);
  return pid;
}

Test (online_store, child_of_idle_parent_takes_its_mount)
{
  struct pgd_err err = { 0 };

  make_idle_parent ();
  long srv = server_of ("p");
  cr_assert_gt (srv, 0);
  /* p took base's idle mount the same way */
  cr_expect (!mounted ("base"));
  tl_create (&S, "x", "p", true);
  cr_expect (mounted ("x"), "the child's mount was not handed over");
  cr_expect (!mounted ("p"), "the parent is still mounted");
  cr_expect_eq (server_of ("x"), srv, "another server serves the child");
  cr_expect_eq (server_of ("p"), 0);

  /* the first Get mounts nothing: the same server serves it */
  char *x = tl_get (&S, "x");
  cr_expect_eq (server_of ("x"), srv);
  cr_expect (has_text (x, "image-file", "from the image\n"));
  cr_expect (has_text (x, "init-file", "written by init\n"));
  write_text (x, "container-file", "written in the container\n");
  write_text (x, "init-file", "overwritten\n");
  tl_put (&S, "x");

  /* the parent afterwards: its own content only, read-only (it has a child) */
  char *p = tl_get (&S, "p");
  cr_expect (has_text (p, "init-file", "written by init\n"));
  cr_expect (!has_text (p, "container-file", "written in the container\n"));
  char probe[PATH_MAX * 2];
  snprintf (probe, sizeof probe, "%s/probe", p);
  cr_expect_lt (open (probe, O_WRONLY | O_CREAT, 0600), 0, "the parent is writable");
  cr_expect_eq (errno, EROFS);
  tl_put (&S, "p");

  /* the child's changes, tracked from the snapshot and checked against the full walk */
  struct pgd_changes ch = { 0 };
  cr_assert_eq (ops->changes (S.l, "x", "p", &ch, &err), 0, "%s", err.msg);
  cr_expect_eq (ch.n, 2, "got %zu changes", ch.n);
  pgd_changes_free (&ch);
  bool use = false;
  size_t nvisit = 0;
  cr_assert_eq (pgd_layers_track_hint (S.l, "x", "p", &use, &nvisit, &err), 0, "%s", err.msg);
  cr_expect (use, "the child's changes are not tracked");
  free (x);
  free (p);

  /* the images on disk: both valid, the child's chain one longer than the parent's */
  char img[PATH_MAX * 2];
  snprintf (img, sizeof img, "%s/layers/x", S.home);
  tl_remove (&S, "x");
  cr_expect (!mounted ("x"));
  snprintf (img, sizeof img, "%s/layers/p", S.home);
  cr_expect_eq (pgd_image_check (img, false, &err), 0, "%s", err.msg);
  tl_remove (&S, "p");
  tl_remove (&S, "base");
}

Test (online_store, busy_parent_is_cloned_unmounted)
{
  make_idle_parent ();
  char *p = tl_get (&S, "p"); /* held: not idle */
  struct pgd_create_req req = { .id = "x", .parent = "p", .rw = true };
  struct pgd_err err = { 0 };
  /* a parent held read-write cannot be cloned, as before */
  cr_expect_lt (ops->create (S.l, &req, &err), 0);
  tl_put (&S, "p");
  free (p);
}

Test (online_store, kill_of_server_after_snapshot_leaves_valid_images)
{
  struct pgd_err err = { 0 };
  char img[PATH_MAX * 2], run[PATH_MAX * 2];

  make_idle_parent ();
  tl_create (&S, "x", "p", true);
  char *x = tl_get (&S, "x");
  write_text (x, "container-file", "written in the container\n");
  /* durable in the child's top (never a global sync: other tests' mounts) */
  char path[PATH_MAX * 2];
  snprintf (path, sizeof path, "%s/container-file", x);
  int fd = open (path, O_RDONLY);
  cr_assert_geq (fd, 0);
  cr_assert_eq (syncfs (fd), 0);
  close (fd);
  free (x);
  /* kill -9 the server of x's mount */
  snprintf (run, sizeof run, "%s/run/x/server.pid", S.home);
  FILE *f = fopen (run, "r");
  cr_assert_not_null (f);
  long pid = 0;
  cr_assert_eq (fscanf (f, "%ld", &pid), 1);
  fclose (f);
  cr_assert_eq (kill ((pid_t)pid, SIGKILL), 0);
  tl_wait_gone ((pid_t)pid);
  tl_put (&S, "x");
  /* the parent's image was closed at the snapshot: valid, untouched by the kill */
  snprintf (img, sizeof img, "%s/layers/p", S.home);
  cr_expect_eq (pgd_image_check (img, false, &err), 0, "%s", err.msg);
  /* the child's is repaired at its next mount and holds what was synced */
  x = tl_get (&S, "x");
  cr_expect (has_text (x, "container-file", "written in the container\n"));
  cr_expect (has_text (x, "init-file", "written by init\n"));
  tl_put (&S, "x");
  free (x);
  tl_remove (&S, "x");
  tl_remove (&S, "p");
  tl_remove (&S, "base");
}

/* The plugin dies between the switch and the handover (here: the store is closed with
   the snapshot done and the child moved into place, the mount still at the parent's
   paths): the next start takes that mount down (the server closes the child's top
   cleanly) instead of adopting it as the parent's; both layers are valid. */
Test (online_store, start_after_a_cut_short_snapshot)
{
  char pimage[PATH_MAX * 2], prun[PATH_MAX * 2], pmnt[PATH_MAX * 2], crun[PATH_MAX * 2],
      cmnt[PATH_MAX * 2], staging[PATH_MAX * 2], cimage[PATH_MAX * 2], pf[PATH_MAX * 3];
  struct pgd_err err = { 0 };

  make_idle_parent ();
  long srv = server_of ("p");
  snprintf (pimage, sizeof pimage, "%s/layers/p", S.home);
  snprintf (prun, sizeof prun, "%s/run/p", S.home);
  snprintf (pmnt, sizeof pmnt, "%s/mnt/p", S.home);
  snprintf (crun, sizeof crun, "%s/run/x", S.home);
  snprintf (cmnt, sizeof cmnt, "%s/mnt/x", S.home);
  snprintf (staging, sizeof staging, "%s/staging/x.test", S.home);
  snprintf (cimage, sizeof cimage, "%s/layers/x", S.home);
  cr_assert_eq (mkdir (staging, 0700), 0);
  cr_assert_eq (mkdir (cmnt, 0755), 0);
  cr_assert_eq (
      pgd_engine_snapshot (&S.l->engine, pimage, prun, pmnt, staging, crun, cmnt, NULL, NULL, &err),
      0, "%s", err.msg);
  snprintf (pf, sizeof pf, "%s/parent", staging);
  FILE *f = fopen (pf, "w");
  cr_assert_not_null (f);
  fputs ("p", f);
  fclose (f);
  cr_assert_eq (rename (staging, cimage), 0);
  cr_assert (pgd_engine_snapshot_pending (prun));

  tl_store_close (&S);
  tl_store_open (&S);
  cr_expect (!mounted ("p"), "the cut-short mount was adopted");
  cr_expect (!mounted ("x"));
  tl_wait_gone ((pid_t)srv);
  cr_expect (!pgd_engine_snapshot_pending (prun));
  cr_expect_eq (pgd_image_check (pimage, false, &err), 0, "%s", err.msg);
  cr_expect_eq (pgd_image_check (cimage, false, &err), 0, "%s", err.msg);
  char *x = tl_get (&S, "x");
  cr_expect (has_text (x, "init-file", "written by init\n"));
  tl_put (&S, "x");
  free (x);
  char *p = tl_get (&S, "p");
  cr_expect (has_text (p, "init-file", "written by init\n"));
  tl_put (&S, "p");
  free (p);
  tl_remove (&S, "x");
  tl_remove (&S, "p");
  tl_remove (&S, "base");
}
