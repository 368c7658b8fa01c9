/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ApplyDiff (pgd_diff_apply) on plain directories: every entry type and its metadata,
   name normalisation, whiteouts, opaque directories, AUFS hardlinks, replacement
   rules, tar dialects, chunking, ID maps, sizes, and hostile archives that must fail
   without touching anything outside the root. */
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "diffkit.h"

TestSuite (apply, .init = kit_setup, .fini = kit_teardown);

/* Apply T to a fresh directory "root" and return it; asserts success. */
static const char *
apply_ok (struct kit_tar *t, int64_t *size)
{
  const char *root = kit_path ("root");
  struct pgd_err err = { 0 };
  int64_t s = -1;

  if (!kit_exists (root))
    kit_mkdir (root, 0755);
  cr_assert_eq (kit_apply (root, t->buf, t->len, &s, &err), 0, "apply: %s", err.msg);
  if (size)
    *size = s;
  return root;
}

Test (apply, entry_types_and_metadata)
{
  struct kit_tar t;
  struct archive_entry *e;
  struct stat st;
  int64_t size;
  char buf[64];

  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE);
  e = kit_tar_entry (&t, "d/", AE_IFDIR, 0750);
  archive_entry_set_uid (e, 1);
  archive_entry_set_gid (e, 2);
  archive_entry_set_mtime (e, 1500000000, 0);
  kit_tar_put (&t, NULL, 0);
  e = kit_tar_entry (&t, "d/f", AE_IFREG, 04755);
  archive_entry_set_uid (e, 3);
  archive_entry_set_gid (e, 4);
  archive_entry_set_atime (e, 1400000000, 0); /* before mtime: atime becomes mtime */
  archive_entry_xattr_add_entry (e, "user.k", "v", 1);
  kit_tar_put (&t, "hello", 5);
  e = kit_tar_entry (&t, "g", AE_IFREG, 0600);
  archive_entry_set_mtime (e, 1600000000, 123456789);
  archive_entry_set_atime (e, 1700000000, 0);
  kit_tar_put (&t, "xy", 2);
  kit_tar_symlink (&t, "d/l", "f");
  /* a hardlink header carries the inode's metadata, and dockerd applies it again */
  e = kit_tar_entry (&t, "d/h", AE_IFREG, 04755);
  archive_entry_set_uid (e, 3);
  archive_entry_set_gid (e, 4);
  archive_entry_set_hardlink (e, "d/f");
  archive_entry_set_size (e, 0);
  kit_tar_put (&t, NULL, 0);
  e = kit_tar_entry (&t, "c", AE_IFCHR, 0666);
  archive_entry_set_rdev (e, makedev (1, 3));
  kit_tar_put (&t, NULL, 0);
  kit_tar_entry (&t, "p", AE_IFIFO, 0640);
  kit_tar_put (&t, NULL, 0);
  kit_tar_dir (&t, "s", 01777);
  kit_tar_end (&t);
  const char *root = apply_ok (&t, &size);
  kit_tar_free (&t);

  cr_expect_eq (size, 7, "size = header sizes (5 + 2), got %lld", (long long)size);
  cr_assert_eq (lstat (kit_path ("root/d"), &st), 0);
  cr_expect (S_ISDIR (st.st_mode) && (st.st_mode & 07777) == 0750);
  cr_expect_eq (st.st_uid, 1);
  cr_expect_eq (st.st_gid, 2);
  cr_expect_eq (st.st_mtime, 1500000000, "directory times are applied last");
  cr_assert_eq (lstat (kit_path ("root/d/f"), &st), 0);
  cr_expect (S_ISREG (st.st_mode) && (st.st_mode & 07777) == 04755, "mode %o", st.st_mode);
  cr_expect_eq (st.st_uid, 3);
  cr_expect_eq (st.st_gid, 4);
  cr_expect_eq (st.st_nlink, 2, "d/h is a hardlink of d/f");
  cr_expect_eq (st.st_mtime, 1600000000);
  cr_expect_eq (st.st_atime, 1600000000, "atime = max(atime, mtime)");
  cr_expect_str_eq (kit_read (kit_path ("root/d/f")), "hello");
  cr_expect_eq (lgetxattr (kit_path ("root/d/f"), "user.k", buf, sizeof buf), 1);
  cr_assert_eq (lstat (kit_path ("root/g"), &st), 0);
  cr_expect_eq (st.st_mtim.tv_nsec, 123456789);
  cr_expect_eq (st.st_atime, 1700000000);
  cr_assert_eq (lstat (kit_path ("root/d/l"), &st), 0);
  cr_expect (S_ISLNK (st.st_mode));
  cr_expect_eq (st.st_mtime, 1600000000, "symlink times with lutimes semantics");
  cr_expect_eq (readlink (kit_path ("root/d/l"), buf, sizeof buf), 1);
  cr_assert_eq (lstat (kit_path ("root/c"), &st), 0);
  cr_expect (S_ISCHR (st.st_mode) && st.st_rdev == makedev (1, 3));
  cr_assert_eq (lstat (kit_path ("root/p"), &st), 0);
  cr_expect (S_ISFIFO (st.st_mode) && (st.st_mode & 07777) == 0640);
  cr_assert_eq (lstat (kit_path ("root/s"), &st), 0);
  cr_expect_eq (st.st_mode & 07777, 01777);
  (void)root;
}

Test (apply, names_are_normalised_and_parents_made)
{
  struct kit_tar t;
  struct stat st;

  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_USTAR);
  kit_tar_file (&t, "./a//b/../c", "1", 0644);
  kit_tar_file (&t, "x/y/z", "2", 0644);
  kit_tar_dir (&t, "./", 0711);
  kit_tar_end (&t);
  apply_ok (&t, NULL);
  kit_tar_free (&t);

  cr_expect_str_eq (kit_read (kit_path ("root/a/c")), "1");
  cr_expect (!kit_exists (kit_path ("root/a/b")));
  cr_expect_str_eq (kit_read (kit_path ("root/x/y/z")), "2");
  cr_assert_eq (lstat (kit_path ("root/x/y"), &st), 0);
  cr_expect_eq (st.st_mode & 07777, 0600, "implicit parents are 0600 (dockerd)");
  cr_assert_eq (lstat (kit_path ("root"), &st), 0);
  cr_expect_eq (st.st_mode & 07777, 0711, "\"./\" gives the root its metadata");
}

Test (apply, whiteouts_remove_recursively)
{
  struct kit_tar t;

  kit_mkdir (kit_path ("root"), 0755);
  kit_mkdir (kit_path ("root/a"), 0755);
  kit_mkdir (kit_path ("root/a/b"), 0755);
  kit_write (kit_path ("root/a/b/c"), "c", 0644);
  kit_write (kit_path ("root/a/keep"), "k", 0644);
  kit_write (kit_path ("root/top"), "t", 0644);
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_file (&t, "a/.wh.b", "", 0);
  kit_tar_file (&t, "a/.wh.missing", "", 0);
  kit_tar_file (&t, ".wh.top", "", 0);
  kit_tar_end (&t);
  apply_ok (&t, NULL);
  kit_tar_free (&t);

  cr_expect (!kit_exists (kit_path ("root/a/b")));
  cr_expect (!kit_exists (kit_path ("root/top")));
  cr_expect (kit_exists (kit_path ("root/a/keep")));
  cr_expect (!kit_exists (kit_path ("root/a/.wh.b")), "whiteouts are not created");
  cr_expect (!kit_exists (kit_path ("root/.wh.top")));
}

Test (apply, opaque_directory)
{
  struct kit_tar t;

  kit_mkdir (kit_path ("root"), 0755);
  kit_mkdir (kit_path ("root/D"), 0755);
  kit_write (kit_path ("root/D/x"), "x", 0644);
  kit_mkdir (kit_path ("root/D/sub"), 0755);
  kit_write (kit_path ("root/D/sub/old"), "o", 0644);
  kit_write (kit_path ("root/other"), "o", 0644);
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_dir (&t, "D/", 0755);
  kit_tar_file (&t, "D/new", "n", 0644);
  kit_tar_dir (&t, "D/sub/", 0755);
  kit_tar_file (&t, "D/sub/k", "k", 0644);
  kit_tar_file (&t, "D/.wh..wh..opq", "", 0);
  kit_tar_end (&t);
  apply_ok (&t, NULL);
  kit_tar_free (&t);

  cr_expect (!kit_exists (kit_path ("root/D/x")), "lower child of an opaque dir goes");
  cr_expect (!kit_exists (kit_path ("root/D/sub/old")), "and so do lower grandchildren");
  cr_expect (kit_exists (kit_path ("root/D/new")));
  cr_expect (kit_exists (kit_path ("root/D/sub/k")));
  cr_expect (kit_exists (kit_path ("root/other")));
  cr_expect (!kit_exists (kit_path ("root/D/.wh..wh..opq")));
}

Test (apply, existing_paths_are_replaced_unless_dir_over_dir)
{
  struct kit_tar t;
  struct stat st;

  kit_mkdir (kit_path ("root"), 0755);
  kit_mkdir (kit_path ("root/f"), 0755);
  kit_write (kit_path ("root/f/child"), "c", 0644);
  kit_write (kit_path ("root/g"), "g", 0644);
  kit_mkdir (kit_path ("root/h"), 0755);
  kit_write (kit_path ("root/h/old"), "o", 0644);
  cr_assert_eq (symlink ("/etc", kit_path ("root/s")), 0);
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_file (&t, "f", "file now", 0644);
  kit_tar_dir (&t, "g/", 0755);
  kit_tar_dir (&t, "h/", 0700);
  kit_tar_dir (&t, "s/", 0755);
  kit_tar_end (&t);
  apply_ok (&t, NULL);
  kit_tar_free (&t);

  cr_expect_str_eq (kit_read (kit_path ("root/f")), "file now");
  cr_assert_eq (lstat (kit_path ("root/g"), &st), 0);
  cr_expect (S_ISDIR (st.st_mode));
  cr_assert_eq (lstat (kit_path ("root/h"), &st), 0);
  cr_expect_eq (st.st_mode & 07777, 0700);
  cr_expect (kit_exists (kit_path ("root/h/old")), "dir over dir keeps the children");
  cr_assert_eq (lstat (kit_path ("root/s"), &st), 0);
  cr_expect (S_ISDIR (st.st_mode), "a symlink is replaced, not followed");
}

Test (apply, aufs_hardlinks)
{
  struct kit_tar t;
  struct stat st;
  int64_t size;

  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_dir (&t, ".wh..wh.plnk/", 0700);
  kit_tar_file (&t, ".wh..wh.plnk/1234.5", "shared", 0640);
  kit_tar_file (&t, ".wh..wh.aufs", "", 0600);
  kit_tar_hardlink (&t, "x", ".wh..wh.plnk/1234.5");
  kit_tar_hardlink (&t, "dir/y", ".wh..wh.plnk/1234.5");
  kit_tar_end (&t);
  apply_ok (&t, &size);
  kit_tar_free (&t);

  cr_expect_str_eq (kit_read (kit_path ("root/x")), "shared");
  cr_expect_str_eq (kit_read (kit_path ("root/dir/y")), "shared");
  cr_assert_eq (lstat (kit_path ("root/x"), &st), 0);
  cr_expect_eq (st.st_mode & 07777, 0640);
  cr_expect (!kit_exists (kit_path ("root/.wh..wh.plnk")));
  cr_expect (!kit_exists (kit_path ("root/.wh..wh.aufs")));
  cr_expect_eq (size, 6);
}

/* The same small tree in every dialect, each followed by junk after the end. */
Test (apply, dialects_and_trailing_bytes)
{
  const int formats[] = { ARCHIVE_FORMAT_TAR_USTAR, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED,
                          ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE, ARCHIVE_FORMAT_TAR_GNUTAR };
  char longname[300];

  memset (longname, 'n', 150);
  strcpy (longname + 150, "/file");
  for (size_t i = 0; i < sizeof formats / sizeof *formats; i++)
    {
      struct kit_tar t;
      struct pgd_err err = { 0 };
      const char *root = kit_path ("root%zu", i);
      int64_t size;
      size_t fed;
      static char junk[20000];

      kit_tar_begin (&t, formats[i]);
      kit_tar_file (&t, "./a", "alpha", 0644);
      if (formats[i] != ARCHIVE_FORMAT_TAR_USTAR)
        kit_tar_file (&t, longname, "long", 0644);
      kit_tar_end (&t);
      size_t len = t.len;
      t.buf = realloc (t.buf, len + sizeof junk);
      memset (junk, 'J', sizeof junk);
      memcpy (t.buf + len, junk, sizeof junk);
      kit_mkdir (root, 0755);
      cr_assert_eq (
          kit_apply_chunked (root, t.buf, len + sizeof junk, NULL, 0, NULL, &size, &fed, &err), 0,
          "format %d: %s", formats[i], err.msg);
      cr_expect_eq (fed, len + sizeof junk, "format %d: stream read to its end", formats[i]);
      cr_expect_str_eq (kit_read (kit_path ("root%zu/a", i)), "alpha");
      if (formats[i] != ARCHIVE_FORMAT_TAR_USTAR)
        cr_expect_str_eq (kit_read (kit_path ("root%zu/%s", i, longname)), "long");
      kit_tar_free (&t);
    }
}

Test (apply, gnu_tar_binary_output)
{
  struct pgd_err err = { 0 };
  int64_t size = 0;

  kit_mkdir (kit_path ("src"), 0755);
  kit_sh ("cd %s && mkdir -p deep/%0200d && echo data > deep/%0200d/f && ln -s f deep/%0200d/l"
          " && ln deep/%0200d/f hard && mkfifo fifo && tar --format=gnu -cf ../gnu.tar .",
          kit_path ("src"), 0, 0, 0, 0);
  kit_mkdir (kit_path ("root"), 0755);
  int fd = open (kit_path ("gnu.tar"), O_RDONLY | O_CLOEXEC);
  cr_assert_geq (fd, 0);
  int r = pgd_diff_apply (kit_path ("root"), fd, NULL, &size, &err);
  close (fd);
  cr_assert_eq (r, 0, "%s", err.msg);
  char *c = kit_changes (kit_path ("root"), kit_path ("src"));
  cr_expect_str_eq (c, "", "applied tree differs from the source:\n%s", c);
  free (c);
  cr_expect_eq (size, 5);
}

Test (apply, chunk_sizes_do_not_matter)
{
  static const size_t c512[] = { 512 }, c27[] = { 27 }, codd[] = { 1, 3, 7, 1021, 4093, 2 },
                      cbig[] = { 65537 };
  const size_t *sets[] = { c512, c27, codd, cbig };
  const size_t nsets[] = { 1, 1, 6, 1 };
  struct kit_tar t;
  static char big[300000];

  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (char)(i * 7 + i / 511);
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_dir (&t, "dir/", 0755);
  kit_tar_entry (&t, "dir/big", AE_IFREG, 0644);
  kit_tar_put (&t, big, sizeof big);
  kit_tar_file (&t, "dir/small", "s", 0600);
  kit_tar_symlink (&t, "dir/link", "big");
  kit_tar_end (&t);
  for (size_t s = 0; s < 4; s++)
    {
      /* each chunk read on its own, as from a slow client: the end-of-archive check
         must not depend on how the stream was cut up */
      kit_drip = s > 0;
      struct pgd_err err = { 0 };
      int64_t size = 0;
      const char *root = kit_path ("r%zu", s);
      kit_mkdir (root, 0755);
      cr_assert_eq (
          kit_apply_chunked (root, t.buf, t.len, sets[s], nsets[s], NULL, &size, NULL, &err), 0,
          "chunks %zu: %s", s, err.msg);
      cr_expect_eq (size, (int64_t)sizeof big + 1);
      if (s > 0)
        {
          char *c = kit_changes (root, kit_path ("r0"));
          cr_expect_str_eq (c, "", "chunking %zu changed the result: %s", s, c);
          free (c);
          kit_sh ("cmp -s %s/dir/big %s/dir/big", root, kit_path ("r0"));
        }
    }
  kit_drip = false;
  kit_tar_free (&t);
}

Test (apply, owners_are_mapped_to_the_host)
{
  struct pgd_idmap uid = { 0, 100000, 65536 }, gid = { 0, 200000, 65536 };
  struct pgd_idmaps maps = { &uid, 1, &gid, 1 };
  struct kit_tar t;
  struct archive_entry *e;
  struct pgd_err err = { 0 };
  struct stat st;
  int64_t size;

  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  e = kit_tar_entry (&t, "f", AE_IFREG, 0644);
  archive_entry_set_uid (e, 1000);
  archive_entry_set_gid (e, 1001);
  kit_tar_put (&t, "f", 1);
  kit_tar_symlink (&t, "l", "f");
  kit_tar_end (&t);
  kit_mkdir (kit_path ("root"), 0755);
  cr_assert_eq (
      kit_apply_chunked (kit_path ("root"), t.buf, t.len, NULL, 0, &maps, &size, NULL, &err), 0,
      "%s", err.msg);
  kit_tar_free (&t);
  cr_assert_eq (lstat (kit_path ("root/f"), &st), 0);
  cr_expect_eq (st.st_uid, 101000);
  cr_expect_eq (st.st_gid, 201001);
  cr_assert_eq (lstat (kit_path ("root/l"), &st), 0);
  cr_expect_eq (st.st_uid, 100000);

  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  e = kit_tar_entry (&t, "unmapped", AE_IFREG, 0644);
  archive_entry_set_uid (e, 70000);
  kit_tar_put (&t, "", 0);
  kit_tar_end (&t);
  cr_expect_neq (
      kit_apply_chunked (kit_path ("root"), t.buf, t.len, NULL, 0, &maps, &size, NULL, &err), 0);
  cr_expect (strstr (err.msg, "unmapped") != NULL, "%s", err.msg);
  kit_tar_free (&t);
}

Test (apply, empty_stream_is_an_empty_layer)
{
  struct pgd_err err = { 0 };
  int64_t size = -1;

  kit_mkdir (kit_path ("root"), 0755);
  cr_expect_eq (kit_apply (kit_path ("root"), "", 0, &size, &err), 0, "%s", err.msg);
  cr_expect_eq (size, 0);
}

/* ---- hostile archives ---- */

/* Make root/ and a sentinel directory beside it. */
static void
hostile_setup (void)
{
  kit_mkdir (kit_path ("root"), 0755);
  kit_mkdir (kit_path ("sentinel"), 0755);
  kit_write (kit_path ("sentinel/keep"), "safe", 0644);
}

/* Nothing beside root changed: the scratch dir holds root and sentinel only, and the
   sentinel holds exactly its file, unchanged. */
static void
hostile_check (void)
{
  struct stat st;

  kit_sh ("test \"$(ls -A %s | tr '\\n' ' ')\" = 'root sentinel '", kit_dir);
  kit_sh ("test \"$(ls -A %s | tr '\\n' ' ')\" = 'keep '", kit_path ("sentinel"));
  cr_expect_str_eq (kit_read (kit_path ("sentinel/keep")), "safe");
  cr_assert_eq (lstat (kit_path ("sentinel/keep"), &st), 0);
  cr_expect_eq (st.st_mode & 07777, 0644);
  cr_expect_eq (st.st_nlink, 1);
  cr_expect_eq (st.st_uid, 0);
}

/* Apply T, expect failure whose message contains WANT (the entry's name). */
static void
hostile_expect (struct kit_tar *t, const char *want)
{
  struct pgd_err err = { 0 };
  int64_t size;
  size_t fed = 0;

  cr_expect_neq (
      kit_apply_chunked (kit_path ("root"), t->buf, t->len, NULL, 0, NULL, &size, &fed, &err), 0,
      "archive with %s was accepted", want);
  cr_expect_eq (fed, t->len, "the stream is read to its end even after an error");
  cr_expect (strstr (err.msg, want) != NULL, "message \"%s\" does not name \"%s\"", err.msg, want);
  cr_log_info ("refused: %.300s", err.msg);
  hostile_check ();
}

Test (apply, hostile_dotdot)
{
  struct kit_tar t;
  hostile_setup ();
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_file (&t, "ok", "fine", 0644);
  kit_tar_file (&t, "../sentinel/evil", "x", 0644);
  kit_tar_end (&t);
  hostile_expect (&t, "../sentinel/evil");
  kit_tar_free (&t);

  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_file (&t, "a/../../sentinel/keep", "x", 0644);
  kit_tar_end (&t);
  hostile_expect (&t, "a/../../sentinel/keep");
  kit_tar_free (&t);
}

Test (apply, hostile_absolute)
{
  struct kit_tar t;
  char abs[PATH_MAX];

  hostile_setup ();
  snprintf (abs, sizeof abs, "%s", kit_path ("sentinel/evil"));
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_file (&t, abs, "x", 0644);
  kit_tar_end (&t);
  hostile_expect (&t, abs);
  kit_tar_free (&t);
}

Test (apply, hostile_symlink_then_write_through)
{
  struct kit_tar t;
  char abs[PATH_MAX];

  hostile_setup ();
  snprintf (abs, sizeof abs, "%s", kit_path ("sentinel"));
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_symlink (&t, "esc", abs); /* absolute targets are allowed, as in dockerd */
  kit_tar_file (&t, "esc/evil", "x", 0644);
  kit_tar_end (&t);
  hostile_expect (&t, "esc/evil");
  kit_tar_free (&t);

  /* the same through a relative link that stays inside, then a whiteout through it */
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_symlink (&t, "in", ".");
  kit_tar_file (&t, "in/.wh.keep", "", 0);
  kit_tar_end (&t);
  hostile_expect (&t, "in/.wh.keep");
  kit_tar_free (&t);
}

Test (apply, hostile_symlink_pointing_outside)
{
  struct kit_tar t;

  hostile_setup ();
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_dir (&t, "d/", 0755);
  kit_tar_symlink (&t, "d/out", "../../sentinel");
  kit_tar_file (&t, "d/out/evil", "x", 0644);
  kit_tar_end (&t);
  hostile_expect (&t, "d/out");
  kit_tar_free (&t);

  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_symlink (&t, "abs", "/../../../../../../etc");
  kit_tar_end (&t);
  hostile_expect (&t, "invalid symlink");
  kit_tar_free (&t);
}

Test (apply, hostile_hardlink_outside)
{
  struct kit_tar t;
  char abs[PATH_MAX];

  hostile_setup ();
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_hardlink (&t, "h", "../sentinel/keep");
  kit_tar_end (&t);
  hostile_expect (&t, "invalid hardlink");
  kit_tar_free (&t);

  snprintf (abs, sizeof abs, "%s", kit_path ("sentinel/keep"));
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_hardlink (&t, "h2", abs);
  kit_tar_end (&t);
  hostile_expect (&t, "h2");
  kit_tar_free (&t);

  /* a link whose directory part crosses a symlink to the outside */
  snprintf (abs, sizeof abs, "%s", kit_path ("sentinel"));
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_symlink (&t, "s", abs);
  kit_tar_hardlink (&t, "h3", "s/keep");
  kit_tar_end (&t);
  hostile_expect (&t, "h3");
  kit_tar_free (&t);
}

/* Not errors, but nothing outside may change: a symlink to an outside file is
   replaced by a later entry of that name, and a hardlink to such a symlink links
   the symlink itself. */
Test (apply, symlink_to_outside_is_never_followed)
{
  struct kit_tar t;
  struct stat st;
  char abs[PATH_MAX];

  hostile_setup ();
  snprintf (abs, sizeof abs, "%s", kit_path ("sentinel/keep"));
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_symlink (&t, "l", abs);
  kit_tar_hardlink (&t, "h", "l");
  kit_tar_file (&t, "l", "overwritten?", 0600);
  kit_tar_end (&t);
  apply_ok (&t, NULL);
  kit_tar_free (&t);
  hostile_check ();
  cr_assert_eq (lstat (kit_path ("root/h"), &st), 0);
  cr_expect (S_ISLNK (st.st_mode));
  cr_expect_str_eq (kit_read (kit_path ("root/l")), "overwritten?");
}

Test (apply, hostile_huge_names)
{
  struct kit_tar t;
  static char name[70000];

  hostile_setup ();
  memset (name, 'a', 300);
  name[300] = '\0';
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_file (&t, name, "x", 0644);
  kit_tar_end (&t);
  hostile_expect (&t, "aaaaaaaaaaaaaaaa");
  kit_tar_free (&t);

  for (size_t i = 0; i + 2 < sizeof name; i += 2)
    memcpy (name + i, "a/", 2);
  name[sizeof name - 2] = 'z';
  name[sizeof name - 1] = '\0';
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_file (&t, name, "x", 0644);
  kit_tar_end (&t);
  hostile_expect (&t, "entry a/a/a/a/");
  kit_tar_free (&t);
}

Test (apply, hostile_truncated)
{
  struct kit_tar t;
  static char big[100000];

  hostile_setup ();
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_file (&t, "first", "1", 0644);
  kit_tar_entry (&t, "bigfile", AE_IFREG, 0644);
  kit_tar_put (&t, big, sizeof big);
  kit_tar_end (&t);
  t.len = 3000; /* inside bigfile's data */
  hostile_expect (&t, "bigfile");
  kit_tar_free (&t);

  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_USTAR);
  kit_tar_file (&t, "first", "1", 0644);
  kit_tar_file (&t, "second", "2", 0644);
  kit_tar_end (&t);
  t.len = 1024 + 300; /* inside second's header */
  hostile_expect (&t, "first");
  kit_tar_free (&t);
}

Test (apply, hostile_garbage)
{
  struct kit_tar t;
  struct pgd_err err = { 0 };
  int64_t size;
  static char junk[8192];

  hostile_setup ();
  for (size_t i = 0; i < sizeof junk; i++)
    junk[i] = (char)(i * 131 + 17);
  cr_expect_neq (kit_apply (kit_path ("root"), junk, sizeof junk, &size, &err), 0);
  cr_expect (strstr (err.msg, "apply to") != NULL, "%s", err.msg);
  hostile_check ();

  /* valid entries, then a header with a broken checksum */
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_USTAR);
  kit_tar_file (&t, "good", "1", 0644);
  kit_tar_file (&t, "bad", "2", 0644);
  kit_tar_end (&t);
  t.buf[1024 + 148] ^= 0x5;
  hostile_expect (&t, "good");
  kit_tar_free (&t);
}

Test (apply, hostile_whiteout_names)
{
  struct kit_tar t;

  hostile_setup ();
  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_file (&t, ".wh..", "", 0);
  kit_tar_end (&t);
  hostile_expect (&t, "invalid whiteout");
  kit_tar_free (&t);
  kit_sh ("test -d %s", kit_path ("root"));

  kit_tar_begin (&t, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
  kit_tar_file (&t, "x/.wh.", "", 0);
  kit_tar_end (&t);
  hostile_expect (&t, "x/.wh.");
  kit_tar_free (&t);
}
