/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Changes and DiffSize (pgd_diff_changes, pgd_diff_size): Docker's order and rules on
   plain directories (copies: the full comparison), and on loop-mounted ext4 clones
   (the (inode, ctime) fast path), with a measurement on 10k files. */
#include <sys/time.h>
#include <sys/xattr.h>
#include <time.h>

#include "diff/tree.h"
#include "diffkit.h"

TestSuite (changes, .init = kit_setup, .fini = kit_teardown);

/* A v2 file capability: cap_net_bind_service permitted and effective. */
static const unsigned char cap_v2[20] = { 0x01, 0x00, 0x00, 0x02, 0x00, 0x04 };

static void
expect_changes (const char *new_root, const char *old_root, const char *want)
{
  char *got = kit_changes (new_root, old_root);
  cr_expect_str_eq (got, want, "changes:\n%s\nwanted:\n%s", got, want);
  free (got);
}

/* Make "base", then "new" as a copy of it (different inodes: the full comparison). */
static void
copy_base (void)
{
  kit_sh ("cp -a %s %s", kit_path ("base"), kit_path ("new"));
}

Test (changes, order_mkdir_foo)
{
  kit_mkdir (kit_path ("old"), 0755);
  kit_mkdir (kit_path ("new"), 0755);
  kit_mkdir (kit_path ("new/foo"), 0755);
  kit_write (kit_path ("new/foo/bar"), "xyzzy\n", 0644);
  expect_changes (kit_path ("new"), kit_path ("old"), "A /foo\nA /foo/bar\n");
}

Test (changes, order_busybox_like)
{
  kit_mkdir (kit_path ("base"), 0755);
  kit_mkdir (kit_path ("base/bin"), 0755);
  kit_write (kit_path ("base/bin/ls"), "ls", 0755);
  kit_write (kit_path ("base/bin/sh"), "sh", 0755);
  kit_mkdir (kit_path ("base/etc"), 0755);
  kit_write (kit_path ("base/etc/passwd"), "root", 0644);
  copy_base ();
  kit_write (kit_path ("new/hello"), "hello\n", 0644);
  cr_assert_eq (unlink (kit_path ("new/bin/ls")), 0);
  kit_sh ("mkdir -p %s/d/e", kit_path ("new"));
  expect_changes (kit_path ("new"), kit_path ("base"),
                  "C /bin\nD /bin/ls\nA /d\nA /d/e\nA /hello\n");
  int64_t size = -1;
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_diff_size (kit_path ("new"), kit_path ("base"), &size, &err), 0, "%s", err.msg);
  cr_expect_eq (size, 6, "DiffSize: /hello only");
}

static int
cmp_change (const void *a, const void *b)
{
  const struct pgd_change *x = a, *y = b;
  int c = strcmp (x->path, y->path);
  return c ? c : (int)x->kind - (int)y->kind;
}

/* graphtest's Changes: 20 files in /directory-0, j%3 = modify / add / delete. */
Test (changes, graphtest_changes_21)
{
  struct pgd_changes got = { 0 };
  struct pgd_err err = { 0 };

  kit_mkdir (kit_path ("base"), 0755);
  kit_mkdir (kit_path ("base/directory-0"), 0755);
  for (int j = 0; j < 20; j++)
    kit_write (kit_path ("base/directory-0/file-%d", j), "0123456789abcdef", 0644);
  copy_base ();
  struct pgd_change expect[21];
  size_t n = 0;
  expect[n++] = (struct pgd_change){ strdup ("/directory-0"), PGD_CHANGE_MODIFY };
  for (int j = 0; j < 20; j++)
    {
      char p[64];
      switch (j % 3)
        {
        case 0:
          kit_write (kit_path ("new/directory-0/file-%d", j), "new content here", 0644);
          snprintf (p, sizeof p, "/directory-0/file-%d", j);
          expect[n++] = (struct pgd_change){ strdup (p), PGD_CHANGE_MODIFY };
          break;
        case 1:
          kit_write (kit_path ("new/directory-0/file-%d-new", j), "added", 0644);
          snprintf (p, sizeof p, "/directory-0/file-%d-new", j);
          expect[n++] = (struct pgd_change){ strdup (p), PGD_CHANGE_ADD };
          break;
        default:
          cr_assert_eq (unlink (kit_path ("new/directory-0/file-%d", j)), 0);
          snprintf (p, sizeof p, "/directory-0/file-%d", j);
          expect[n++] = (struct pgd_change){ strdup (p), PGD_CHANGE_DELETE };
        }
    }
  /* the rewrite may land in the same second as the copy: make the mtime differ */
  for (int j = 0; j < 20; j += 3)
    kit_sh ("touch -d @1700000000.5 %s", kit_path ("new/directory-0/file-%d", j));
  cr_assert_eq (pgd_diff_changes (kit_path ("new"), kit_path ("base"), &got, &err), 0, "%s",
                err.msg);
  cr_assert_eq (got.n, 21, "got %zu changes", got.n);
  cr_expect_str_eq (got.items[0].path, "/directory-0", "the parent comes first");
  qsort (got.items, got.n, sizeof *got.items, cmp_change);
  qsort (expect, n, sizeof *expect, cmp_change);
  for (size_t i = 0; i < n; i++)
    {
      cr_expect_str_eq (got.items[i].path, expect[i].path);
      cr_expect_eq (got.items[i].kind, expect[i].kind, "%s", expect[i].path);
      free (expect[i].path);
    }
  pgd_changes_free (&got);
}

Test (changes, docker_rules)
{
  struct timespec ts[2] = { { 1600000000, 0 }, { 1600000000, 0 } };

  kit_mkdir (kit_path ("base"), 0755);
  kit_mkdir (kit_path ("base/dironly"), 0755);
  kit_write (kit_path ("base/dironly/f"), "f", 0644);
  kit_write (kit_path ("base/nszero"), "n", 0644);
  kit_write (kit_path ("base/nsdiff"), "n", 0644);
  kit_write (kit_path ("base/mode"), "m", 0644);
  kit_write (kit_path ("base/owner"), "o", 0644);
  kit_write (kit_path ("base/cap"), "c", 0755);
  cr_assert_eq (symlink ("aaaa", kit_path ("base/link")), 0);
  kit_write (kit_path ("base/becomes-dir"), "x", 0644);
  kit_mkdir (kit_path ("base/gone"), 0755);
  kit_mkdir (kit_path ("base/gone/sub"), 0755);
  kit_write (kit_path ("base/gone/sub/f"), "f", 0644);
  kit_mkdir (kit_path ("base/a"), 0755);
  kit_mkdir (kit_path ("base/a/b"), 0755);
  kit_mkdir (kit_path ("base/sub"), 0755);
  ts[1].tv_nsec = 500;
  cr_assert_eq (utimensat (AT_FDCWD, kit_path ("base/nsdiff"), ts, 0), 0);
  ts[1].tv_nsec = 0;
  cr_assert_eq (utimensat (AT_FDCWD, kit_path ("base/nszero"), ts, 0), 0);
  cr_assert_eq (utimensat (AT_FDCWD, kit_path ("base/link"), ts, AT_SYMLINK_NOFOLLOW), 0);
  copy_base ();

  /* no change: directory times, and an mtime whose nanoseconds are zero on one side */
  kit_sh ("touch -d @1500000000 %s", kit_path ("new/dironly"));
  ts[1].tv_nsec = 777;
  cr_assert_eq (utimensat (AT_FDCWD, kit_path ("new/nszero"), ts, 0), 0);
  /* changes */
  ts[1].tv_nsec = 501;
  cr_assert_eq (utimensat (AT_FDCWD, kit_path ("new/nsdiff"), ts, 0), 0);
  cr_assert_eq (chmod (kit_path ("new/mode"), 0600), 0);
  cr_assert_eq (lchown (kit_path ("new/owner"), 5, 5), 0);
  cr_assert_eq (setxattr (kit_path ("new/cap"), "security.capability", cap_v2, sizeof cap_v2, 0), 0,
                "setcap: %s", strerror (errno));
  cr_assert_eq (unlink (kit_path ("new/link")), 0);
  cr_assert_eq (symlink ("bbbb", kit_path ("new/link")), 0);
  ts[1].tv_nsec = 0;
  cr_assert_eq (utimensat (AT_FDCWD, kit_path ("new/link"), ts, AT_SYMLINK_NOFOLLOW), 0);
  cr_assert_eq (unlink (kit_path ("new/becomes-dir")), 0);
  kit_mkdir (kit_path ("new/becomes-dir"), 0755);
  kit_write (kit_path ("new/becomes-dir/child"), "c", 0644);
  kit_sh ("rm -rf %s", kit_path ("new/gone"));
  kit_write (kit_path ("new/a/b/c"), "c", 0644);
  kit_mkdir (kit_path ("new/lost+found"), 0700);
  kit_mkdir (kit_path ("new/sub/lost+found"), 0700);
  cr_assert_eq (chmod (kit_path ("new"), 0700), 0, "the root is never listed");

  expect_changes (kit_path ("new"), kit_path ("base"),
                  "C /a\nC /a/b\nA /a/b/c\n"
                  "C /becomes-dir\nA /becomes-dir/child\n"
                  "C /cap\n"
                  "D /gone\n"
                  "C /link\n"
                  "C /mode\n"
                  "C /nsdiff\n"
                  "C /owner\n"
                  "C /sub\nA /sub/lost+found\n");
  cr_assert_eq (chmod (kit_path ("base"), 0755), 0);
}

Test (changes, whole_tree_and_sizes)
{
  struct pgd_err err = { 0 };
  int64_t size = -1;

  kit_mkdir (kit_path ("new"), 0755);
  kit_mkdir (kit_path ("new/lost+found"), 0700);
  kit_mkdir (kit_path ("new/d"), 0755);
  kit_write (kit_path ("new/d/f"), "12345", 0644);
  cr_assert_eq (link (kit_path ("new/d/f"), kit_path ("new/g")), 0);
  cr_assert_eq (symlink ("123", kit_path ("new/l")), 0);
  expect_changes (kit_path ("new"), NULL, "A /d\nA /d/f\nA /g\nA /l\n");
  cr_assert_eq (pgd_diff_size (kit_path ("new"), NULL, &size, &err), 0, "%s", err.msg);
  cr_expect_eq (size, 5 + 3, "hardlinked inode once, symlink by its length, dirs 0");

  kit_sh ("cp -a %s %s", kit_path ("new"), kit_path ("upper"));
  kit_sh ("rm %s/d/f && echo 1234567 > %s/d/new", kit_path ("upper"), kit_path ("upper"));
  cr_assert_eq (pgd_diff_size (kit_path ("upper"), kit_path ("new"), &size, &err), 0, "%s",
                err.msg);
  cr_expect_eq (size, 8, "deletions count 0");
}

/* ---- ext4 clones ---- */

/* base.img with FILES files over 100 directories plus a few special ones, cloned into
   new.img by copying the image file; base mounted read-only, new read-write. */
static void
make_clones (int files)
{
  const char *img = kit_path ("base.img"), *mnt = kit_path ("base");

  kit_ext4_make (img, files > 1000 ? 256 : 64);
  kit_ext4_mount (img, mnt, false);
  kit_sh ("cd %s && mkdir -p etc bin && echo root > etc/passwd && echo bb > bin/busybox"
          " && ln bin/busybox bin/sh && ln -s busybox bin/ls && mkfifo fifo"
          " && for d in $(seq 0 99); do mkdir dir-$d; done"
          " && for i in $(seq 0 %d); do echo content-$i > dir-$((i %% 100))/file-$i; done",
          mnt, files - 1);
  kit_ext4_umount (mnt);
  kit_sh ("cp --sparse=always %s %s", img, kit_path ("new.img"));
  kit_ext4_mount (img, mnt, true);
  kit_ext4_mount (kit_path ("new.img"), kit_path ("new"), false);
}

static int
collect (void *opaque, const struct pgd_tree_change *c, struct pgd_err *err)
{
  return pgd_changes_add (opaque, c->path, c->kind, err);
}

static char *
walk_str (const char *new_root, const char *old_root, unsigned flags, struct pgd_tree_stats *stats)
{
  struct pgd_changes c = { 0 };
  struct pgd_err err = { 0 };

  cr_assert_eq (pgd_tree_walk (new_root, old_root, flags, collect, &c, stats, &err), 0, "%s",
                err.msg);
  char *s = kit_changes_str (&c);
  pgd_changes_free (&c);
  return s;
}

Test (changes, ext4_clone_fast_path)
{
  struct pgd_tree_stats fast, slow;
  char n[PATH_MAX];

  make_clones (300);
  snprintf (n, sizeof n, "%s", kit_path ("new"));
  char *none = walk_str (n, kit_path ("base"), 0, &fast);
  cr_expect_str_eq (none, "", "an untouched clone has no changes: %s", none);
  free (none);
  cr_expect_eq (fast.fastpath, 1, "the clone is recognised");
  cr_expect_eq (fast.fast, fast.compared - 102, "every non-directory settled by inode+ctime");

  /* changes that keep size and mtime: only the ctime tells */
  kit_sh ("cd %s && f=dir-3/file-3 && t=$(stat -c %%y $f) && echo content-X > $f"
          " && touch -d \"$t\" $f",
          n);
  cr_assert_eq (
      setxattr (kit_path ("new/dir-4/file-4"), "security.capability", cap_v2, sizeof cap_v2, 0), 0);
  kit_sh ("cd %s && chmod 600 dir-5/file-5 && chown 7 dir-6/file-6 && rm dir-7/file-7"
          " && echo new > dir-8/added && rm bin/ls && ln -s sh bin/ls && echo x >> etc/passwd"
          " && rm dir-9/file-9 && echo reuse > dir-9/file-9 && mkdir dir-10/sub",
          n);
  const char *want = "C /bin\nC /bin/ls\n"
                     "C /dir-10\nA /dir-10/sub\n"
                     "C /dir-4\nC /dir-4/file-4\n"
                     "C /dir-5\nC /dir-5/file-5\n"
                     "C /dir-6\nC /dir-6/file-6\n"
                     "C /dir-7\nD /dir-7/file-7\n"
                     "C /dir-8\nA /dir-8/added\n"
                     "C /dir-9\nC /dir-9/file-9\n"
                     "C /etc\nC /etc/passwd\n";
  char *f = walk_str (n, kit_path ("base"), 0, &fast);
  char *s = walk_str (n, kit_path ("base"), PGD_TREE_NO_FASTPATH, &slow);
  cr_expect_str_eq (f, want, "fast path:\n%s", f);
  cr_expect_str_eq (s, want, "full comparison:\n%s", s);
  cr_expect_eq (slow.fast, 0);
  cr_expect_gt (fast.fast, 250);
  free (f);
  free (s);

  /* dir-3/file-3 kept size and mtime: Docker's rule cannot see it, and neither may we */
  cr_expect (strstr (want, "file-3") == NULL);
}

static double
now_s (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Not a gate: how long Changes takes on 10k files, fast path against full comparison. */
Test (changes, measure_10k_files)
{
  struct pgd_tree_stats st;
  const int rounds = 5;
  double best[2] = { 1e9, 1e9 };

  make_clones (10000);
  kit_sh ("cd %s && for i in 1 2 3 4 5 6 7 8 9 10; do echo changed > dir-$i/file-$i; done",
          kit_path ("new"));
  for (int r = 0; r < rounds; r++)
    for (int mode = 0; mode < 2; mode++)
      {
        double t0 = now_s ();
        char *s
            = walk_str (kit_path ("new"), kit_path ("base"), mode ? PGD_TREE_NO_FASTPATH : 0, &st);
        double dt = now_s () - t0;
        if (dt < best[mode])
          best[mode] = dt;
        cr_expect_eq (strlen (s), strlen ("C /dir-1\nC /dir-1/file-1\n") * 9
                                      + strlen ("C /dir-10\nC /dir-10/file-10\n"));
        free (s);
      }
  cr_log_info ("Changes over 10k files (warm cache, best of %d): fast path %.1f ms, "
               "full comparison %.1f ms",
               rounds, best[0] * 1e3, best[1] * 1e3);
  fprintf (stderr, "measure: Changes 10k files: fast path %.1f ms, full comparison %.1f ms\n",
           best[0] * 1e3, best[1] * 1e3);
}
