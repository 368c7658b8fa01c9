/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The change tracker in the real layer store, on the real engine: randomised workloads
   in a child layer, each answer (Changes, DiffSize, the Diff tar) computed on the
   tracker's hint and checked entry for entry and byte for byte against the full
   comparison (PGD_TRACK_VERIFY=1 makes the store do both and fail on any difference);
   and the cases where the record must not be trusted: a plugin restart with the layer
   mounted, a kill -9 of the plugin, an overflowing record, another parent. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "engine/image.h"
#include "store/layers.h"
#include "store_fixture.h"
#include "util.h"

static struct tl_store S;
#define L (S.l)
static const struct pgd_ops *ops = &pgd_layers_ops;

static void
setup (void)
{
  setenv ("PGD_TRACK_VERIFY", "1", 1);
  unsetenv ("PGD_TRACK_MAX");
  unsetenv ("PGD_TRACK");
  tl_store_setup (&S, "track");
}

static void
teardown (void)
{
  tl_store_teardown (&S);
}

TestSuite (track, .init = setup, .fini = teardown, .timeout = 900);

static void
create (const char *id, const char *parent)
{
  tl_create (&S, id, parent, parent != NULL);
}

static void
get (const char *id, char *dir)
{
  char *d = tl_get (&S, id);
  snprintf (dir, PATH_MAX, "%s", d);
  free (d);
}

static void
put (const char *id)
{
  tl_put (&S, id);
}

/* Does the tracker hand out a hint for ID against PARENT right now? *NVISIT = its size. */
static bool
tracked (const char *id, const char *parent, size_t *nvisit)
{
  struct pgd_err err = { 0 };
  bool use = false;

  cr_assert_eq (pgd_layers_track_hint (L, id, parent, &use, nvisit, &err), 0, "hint: %s", err.msg);
  return use;
}

/* Changes, DiffSize and Diff of ID against PARENT; with PGD_TRACK_VERIFY=1 the store
   fails any of them whose tracked answer differs from the full one. */
static void
check_all (const char *id, const char *parent, const char *what)
{
  struct pgd_changes ch = { 0 };
  struct pgd_err err = { 0 };
  int64_t size;
  void *stream;

  cr_assert_eq (ops->changes (L, id, parent, &ch, &err), 0, "%s: changes: %s", what, err.msg);
  pgd_changes_free (&ch);
  cr_assert_eq (ops->diff_size (L, id, parent, &size, &err), 0, "%s: size: %s", what, err.msg);
  cr_assert_eq (ops->diff_open (L, id, parent, &stream, &err), 0, "%s: diff: %s", what, err.msg);
  int fd = memfd_create ("diff", MFD_CLOEXEC);
  cr_assert_geq (fd, 0);
  int r = ops->diff_write (stream, fd, &err);
  ops->diff_close (stream);
  close (fd);
  cr_assert_eq (r, 0, "%s: diff: %s", what, err.msg);
}

static void
path_of (char *buf, const char *root, const char *rel)
{
  snprintf (buf, PATH_MAX, "%s/%s", root, rel);
}

/* Create REL with TEXT if its directory exists (random workloads). */
static void
try_file (const char *root, const char *rel, const char *text)
{
  char p[PATH_MAX];
  path_of (p, root, rel);
  int fd = open (p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0)
    return;
  if (write (fd, text, strlen (text)) < 0)
    cr_log_warn ("write %s", p);
  close (fd);
}

static void
put_file (const char *root, const char *rel, const char *text)
{
  char p[PATH_MAX];
  path_of (p, root, rel);
  int fd = open (p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  cr_assert_geq (fd, 0, "create %s: %s", p, strerror (errno));
  cr_assert_eq (write (fd, text, strlen (text)), (ssize_t)strlen (text));
  close (fd);
}

static int __attribute__ ((format (printf, 1, 2))) sh (const char *fmt, ...)
{
  char cmd[PATH_MAX * 4];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (cmd, sizeof cmd, fmt, ap);
  va_end (ap);
  return system (cmd);
}

/* The parent's tree: 8 directories of files and subdirectories, symlinks, xattrs, a
   file with two names in one directory. */
static void
make_base (const char *root)
{
  char rel[64];
  for (int d = 0; d < 8; d++)
    {
      snprintf (rel, sizeof rel, "d%d", d);
      cr_assert_eq (sh ("mkdir -p %s/%s/s0 %s/%s/s1", root, rel, root, rel), 0);
      for (int f = 0; f < 6; f++)
        {
          snprintf (rel, sizeof rel, "d%d/f%d", d, f);
          put_file (root, rel, "base content\n");
          snprintf (rel, sizeof rel, "d%d/s%d/f%d", d, f % 2, f);
          put_file (root, rel, "deeper\n");
        }
    }
  cr_assert_eq (sh ("ln -s ../d1/f1 %s/d0/link && ln %s/d2/f0 %s/d2/hl", root, root, root), 0);
  char p[PATH_MAX];
  path_of (p, root, "d3/f3");
  cr_assert_eq (setxattr (p, "user.base", "1", 1, 0), 0, "%s", strerror (errno));
}

/* One random change in ROOT (the tracked child); failures (ENOENT...) are part of
   the game: whatever happened must be reported alike by both paths. */
static void
random_op (const char *root, unsigned *seed)
{
  char a[PATH_MAX], b[PATH_MAX], ra[64], rb[64];
  int d1 = rand_r (seed) % 9, d2 = rand_r (seed) % 9, f = rand_r (seed) % 8;
  int s = rand_r (seed) % 3, op = rand_r (seed) % 18, fd;
  /* d8 and s2 and f6..f7 do not exist in the parent */
  snprintf (ra, sizeof ra, s == 2 ? "d%d/f%d" : "d%d/s%d/f%d", d1, s == 2 ? f : s, f);
  if (s == 2)
    snprintf (ra, sizeof ra, "d%d/f%d", d1, f);
  snprintf (rb, sizeof rb, "d%d/s%d", d2, s);
  path_of (a, root, ra);
  path_of (b, root, rb);
  switch (op)
    {
    case 0: /* create or overwrite */
      fd = open (a, O_WRONLY | O_CREAT | O_TRUNC, 0640);
      if (fd >= 0 && write (fd, "new\n", 4) < 0)
        cr_log_warn ("write %s", a);
      break;
    case 1: /* append */
      fd = open (a, O_WRONLY | O_APPEND);
      if (fd >= 0 && write (fd, "more\n", 5) < 0)
        cr_log_warn ("append %s", a);
      break;
    case 2: /* overwrite in place, same size */
      fd = open (a, O_WRONLY);
      if (fd >= 0 && pwrite (fd, "B", 1, 0) < 0)
        cr_log_warn ("pwrite %s", a);
      break;
    case 3:
      fd = -1;
      if (truncate (a, 3) < 0)
        break;
      break;
    case 4:
      fd = -1;
      if (chmod (rand_r (seed) % 2 ? a : b, 0700 | (rand_r (seed) % 2 ? 05 : 0)) < 0)
        break;
      break;
    case 5:
      fd = -1;
      if (lchown (rand_r (seed) % 2 ? a : b, 1000 + rand_r (seed) % 2, 1000) < 0)
        break;
      break;
    case 6:
      fd = -1;
      if (lsetxattr (a, "user.t", "v", 1 + rand_r (seed) % 1, 0) < 0)
        break;
      break;
    case 7: /* hard link into another directory */
      fd = -1;
      snprintf (rb, sizeof rb, "d%d/l%d", d2, f);
      path_of (b, root, rb);
      if (link (a, b) < 0)
        break;
      break;
    case 8:
      fd = -1;
      snprintf (rb, sizeof rb, "d%d/y%d", d2, f);
      path_of (b, root, rb);
      if (symlink (ra, b) < 0)
        break;
      break;
    case 9: /* rename a file across directories */
      fd = -1;
      snprintf (rb, sizeof rb, "d%d/f%d", d2, (f + 3) % 8);
      path_of (b, root, rb);
      if (rename (a, b) < 0)
        break;
      break;
    case 10: /* rename a directory across directories */
      fd = -1;
      snprintf (ra, sizeof ra, "d%d/s%d", d1, s);
      snprintf (rb, sizeof rb, "d%d/s%d", d2, (s + 1) % 3);
      path_of (a, root, ra);
      path_of (b, root, rb);
      if (rename (a, b) < 0)
        break;
      break;
    case 11: /* a directory replaced by a file */
      fd = -1;
      if (sh ("rm -rf %s/%s", root, rb) == 0)
        try_file (root, rb, "was a dir\n");
      break;
    case 12: /* a file replaced by a directory */
      fd = -1;
      if (unlink (a) == 0 && mkdir (a, 0755) == 0)
        {
          snprintf (rb, sizeof rb, "%s/in", ra);
          try_file (root, rb, "inside\n");
        }
      break;
    case 13: /* rm -r a tree */
      fd = -1;
      snprintf (ra, sizeof ra, "d%d", d1);
      if (sh ("rm -rf %s/%s", root, ra) != 0)
        cr_log_warn ("rm -rf %s", ra);
      break;
    case 14: /* opaque directory: emptied and refilled under the same name */
      fd = -1;
      if (sh ("rm -rf %s/%s", root, rb) == 0 && mkdir (b, 0755) == 0)
        {
          snprintf (ra, sizeof ra, "%s/fresh", rb);
          try_file (root, ra, "fresh\n");
        }
      break;
    case 15: /* write through a shared mapping, no write(2) */
      fd = open (a, O_RDWR);
      if (fd >= 0)
        {
          struct stat st;
          if (fstat (fd, &st) == 0 && st.st_size > 0 && S_ISREG (st.st_mode))
            {
              char *m = mmap (NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
              if (m != MAP_FAILED)
                {
                  m[0] = 'M';
                  msync (m, st.st_size, MS_SYNC);
                  munmap (m, st.st_size);
                }
            }
        }
      break;
    case 16: /* touch: new times only */
      fd = -1;
      {
        struct timeval tv[2] = { { 1000000 + f, 0 }, { 1000000 + f, 0 } };
        if (utimes (a, tv) < 0)
          break;
      }
      break;
    default: /* mkdir of a new tree */
      fd = -1;
      snprintf (rb, sizeof rb, "d%d/n%d", d2, f);
      path_of (b, root, rb);
      if (mkdir (b, 0755) == 0)
        {
          snprintf (ra, sizeof ra, "%s/x", rb);
          try_file (root, ra, "x\n");
        }
      break;
    }
  if (fd >= 0)
    close (fd);
}

static unsigned
seed_base (void)
{
  const char *s = getenv ("PGD_TRACK_SEED");
  return s ? (unsigned)atoi (s) : (unsigned)getpid ();
}

/* Randomised workloads: every answer on the hint must equal the full comparison,
   while mounted, after an unmount (record saved) and after a remount (reloaded). */
Test (track, random_workloads_match_full_comparison)
{
  char dir[PATH_MAX], what[64];
  unsigned base = seed_base ();
  size_t hinted = 0;

  create ("base", NULL);
  get ("base", dir);
  make_base (dir);
  put ("base");
  for (unsigned run = 0; run < 4; run++)
    {
      char id[32];
      unsigned seed = base + run;
      snprintf (id, sizeof id, "child%u", run);
      create (id, "base");
      for (int round = 0; round < 3; round++)
        {
          get (id, dir);
          for (int i = 0; i < 25; i++)
            random_op (dir, &seed);
          snprintf (what, sizeof what, "seed %u round %d (mounted)", base + run, round);
          check_all (id, "base", what);
          hinted += tracked (id, "base", NULL);
          put (id); /* linger 0: unmounted, record saved */
          snprintf (what, sizeof what, "seed %u round %d (remounted)", base + run, round);
          check_all (id, "base", what);
        }
    }
  cr_log_info ("seed base %u: %zu of 12 rounds answered on the hint", base, hinted);
  /* a changed file with a second name may send a round to the full walk; most not */
  cr_expect_gt (hinted, 0, "the hint was never used (seed base %u)", base);
}

/* A small change in a tree of many directories visits only its own path. */
Test (track, hint_visits_only_the_changed_path)
{
  char dir[PATH_MAX];
  size_t n;

  create ("base", NULL);
  get ("base", dir);
  make_base (dir);
  put ("base");
  create ("c", "base");
  get ("c", dir);
  put_file (dir, "d5/s1/new", "hello\n");
  cr_assert (tracked ("c", "base", &n), "a fresh clone's record is trusted");
  cr_expect_leq (n, 2, "visits %zu directories for one new file", n);
  check_all ("c", "base", "one file");
  /* a file opened for writing and written through mmap after the last check */
  char p[PATH_MAX];
  path_of (p, dir, "d6/f2");
  int fd = open (p, O_RDWR);
  cr_assert_geq (fd, 0);
  char *m = mmap (NULL, 4, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  cr_assert_neq (m, MAP_FAILED);
  m[0] = 'Z'; /* the page fault stamps mtime; no write(2), no fanotify event */
  munmap (m, 4);
  check_all ("c", "base", "mmap write, file still open");
  close (fd);
  struct pgd_changes ch = { 0 };
  struct pgd_err err = { 0 };
  cr_assert_eq (ops->changes (L, "c", "base", &ch, &err), 0, "%s", err.msg);
  cr_assert_eq (ch.n, 5, "got %zu changes", ch.n); /* /d5 /d5/s1 /d5/s1/new /d6 /d6/f2 */
  cr_expect_str_eq (ch.items[4].path, "/d6/f2");
  pgd_changes_free (&ch);
  put ("c");
  cr_assert (tracked ("c", "base", NULL), "the record survives a clean unmount");
  /* asked against another layer than the clone parent: full comparison */
  create ("other", NULL);
  cr_assert_not (tracked ("c", "other", NULL));
}

/* The plugin restarts while the layer is mounted: the mount is adopted, nobody
   watched meanwhile, so the layer's changes are compared in full from then on. */
Test (track, restart_with_mounted_layer_falls_back)
{
  char dir[PATH_MAX], rec[PATH_MAX * 2];

  create ("base", NULL);
  get ("base", dir);
  make_base (dir);
  put ("base");
  create ("c", "base");
  get ("c", dir);
  put_file (dir, "d1/a", "a\n");
  cr_assert (tracked ("c", "base", NULL));
  tl_store_close (&S); /* the mount stays, as with a plugin restart */
  put_file (dir, "d2/b", "written while no plugin ran\n");
  tl_store_open (&S);
  cr_assert_not (tracked ("c", "base", NULL), "an adopted mount must not be trusted");
  check_all ("c", "base", "adopted");
  put ("c");
  snprintf (rec, sizeof rec, "%s/layers/c/changes", S.home);
  cr_assert_neq (access (rec, F_OK), 0, "no record may be written for an adopted mount");
  cr_assert_not (tracked ("c", "base", NULL), "nor trusted after a remount");
  struct pgd_changes ch = { 0 };
  struct pgd_err err = { 0 };
  cr_assert_eq (ops->changes (L, "c", "base", &ch, &err), 0, "%s", err.msg);
  cr_assert_eq (ch.n, 4, "%zu changes", ch.n);
  cr_expect_str_eq (ch.items[3].path, "/d2/b");
  pgd_changes_free (&ch);
}

/* kill -9 of the plugin while the layer is mounted read-write: no record on disk. */
Test (track, kill_9_leaves_no_trusted_record)
{
  char dir[PATH_MAX], rec[PATH_MAX * 2];
  int st;

  create ("base", NULL);
  get ("base", dir);
  make_base (dir);
  put ("base");
  create ("c", "base");
  tl_store_close (&S);
  pid_t pid = fork ();
  cr_assert_geq (pid, 0);
  if (pid == 0)
    {
      tl_store_open (&S);
      get ("c", dir);
      put_file (dir, "d3/k", "killed\n");
      raise (SIGKILL);
      _exit (1);
    }
  cr_assert_eq (waitpid (pid, &st, 0), pid);
  cr_assert (WIFSIGNALED (st) && WTERMSIG (st) == SIGKILL);
  snprintf (rec, sizeof rec, "%s/layers/c/changes", S.home);
  cr_assert_neq (access (rec, F_OK), 0, "the record is off disk while mounted read-write");
  tl_store_open (&S);
  cr_assert_not (tracked ("c", "base", NULL));
  check_all ("c", "base", "after kill -9");
  put ("c"); /* the adopted reference */
}

/* More changed directories than the bound: the record is dropped, answers stay right. */
Test (track, overflow_falls_back)
{
  char dir[PATH_MAX], rel[64];

  tl_store_close (&S);
  setenv ("PGD_TRACK_MAX", "4", 1);
  tl_store_open (&S);
  create ("base", NULL);
  get ("base", dir);
  make_base (dir);
  put ("base");
  create ("c", "base");
  get ("c", dir);
  for (int d = 0; d < 8; d++)
    {
      snprintf (rel, sizeof rel, "d%d/s0/o", d);
      put_file (dir, rel, "o\n");
    }
  cr_assert_not (tracked ("c", "base", NULL), "8 directories exceed a bound of 4");
  check_all ("c", "base", "overflowed");
  put ("c");
  cr_assert_not (tracked ("c", "base", NULL), "an overflowed record is not saved");
}

/* The image written while the plugin did not have it mounted (a mount by hand, the
   CLI): the top delta no longer matches the record's stamp, so the record is not used. */
Test (track, image_written_elsewhere_falls_back)
{
  char dir[PATH_MAX], image[PATH_MAX * 2];
  struct pgd_image_info info;
  struct pgd_err err = { 0 };

  create ("base", NULL);
  get ("base", dir);
  make_base (dir);
  put ("base");
  create ("c", "base");
  get ("c", dir);
  put_file (dir, "d1/a", "a\n");
  put ("c"); /* unmounted: record saved, stamped */
  cr_assert (tracked ("c", "base", NULL), "a cleanly closed record is trusted");
  snprintf (image, sizeof image, "%s/layers/c", S.home);
  cr_assert_eq (pgd_image_info (image, &info, &err), 0, "%s", err.msg);
  struct timeval tv[2] = { { 1, 0 }, { 1, 0 } };
  cr_assert_eq (utimes (info.top_file, tv), 0, "%s", strerror (errno));
  cr_assert_not (tracked ("c", "base", NULL), "a record whose stamp is stale is not trusted");
  check_all ("c", "base", "stale stamp");
}
