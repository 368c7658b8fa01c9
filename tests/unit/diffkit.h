/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Helpers shared by the diff engine suites (test_apply, test_changes, test_difftar):
   a scratch directory, tiny file builders, an in-memory tar builder, feeding a tar
   through a pipe in chosen chunk sizes, and loop-mounted ext4 clones. */
#ifndef PGD_TEST_DIFFKIT_H
#define PGD_TEST_DIFFKIT_H

#include <archive.h>
#include <archive_entry.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diff/diff.h"
#include "util.h"

/* The scratch directory of the running test; removed by kit_teardown. */
static char kit_dir[PATH_MAX];
/* Mount points kit_ext4_mount made, unmounted by kit_teardown. */
static char kit_mounts[4][PATH_MAX + 32];
static char kit_images[4][PATH_MAX + 32];
static int kit_nmounts;

static inline void
kit_setup (void)
{
  signal (SIGPIPE, SIG_IGN);
  umask (022);
  snprintf (kit_dir, sizeof kit_dir, "/tmp/pgd-diff.XXXXXX");
  cr_assert_not_null (mkdtemp (kit_dir), "mkdtemp: %s", strerror (errno));
}

static inline void
kit_teardown (void)
{
  struct pgd_err err = { 0 };

  while (kit_nmounts > 0)
    {
      char cmd[PATH_MAX + 64];
      snprintf (cmd, sizeof cmd, "umount '%s' 2>/dev/null || umount -l '%s'",
                kit_mounts[kit_nmounts - 1], kit_mounts[kit_nmounts - 1]);
      if (system (cmd) != 0)
        fprintf (stderr, "cleanup: umount %s failed\n", kit_mounts[kit_nmounts - 1]);
      kit_nmounts--;
    }
  if (kit_dir[0] && pgd_rm_rf (kit_dir, &err) < 0)
    fprintf (stderr, "cleanup: %s\n", err.msg);
  kit_dir[0] = '\0';
}

/* kit_dir + "/" + formatted suffix, in a rotating static buffer. */
static inline const char *
kit_path (const char *fmt, ...)
{
  static char bufs[16][PATH_MAX * 2];
  static int next;
  char *b = bufs[next++ % 16];
  va_list ap;
  int n = snprintf (b, PATH_MAX * 2, "%s/", kit_dir);

  va_start (ap, fmt);
  vsnprintf (b + n, PATH_MAX * 2 - n, fmt, ap);
  va_end (ap);
  return b;
}

static inline void
kit_sh (const char *fmt, ...)
{
  char cmd[8192];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (cmd, sizeof cmd, fmt, ap);
  va_end (ap);
  int r = system (cmd);
  cr_assert_eq (r, 0, "command failed (%d): %s", r, cmd);
}

static inline void
kit_write (const char *path, const char *data, mode_t mode)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  cr_assert_geq (fd, 0, "open %s: %s", path, strerror (errno));
  cr_assert_eq (write (fd, data, strlen (data)), (ssize_t)strlen (data), "write %s", path);
  close (fd);
  cr_assert_eq (chmod (path, mode), 0, "chmod %s", path);
}

static inline void
kit_mkdir (const char *path, mode_t mode)
{
  cr_assert_eq (mkdir (path, mode), 0, "mkdir %s: %s", path, strerror (errno));
  cr_assert_eq (chmod (path, mode), 0, "chmod %s", path);
}

/* Read the whole small file PATH (static buffer). */
static inline const char *
kit_read (const char *path)
{
  static char buf[65536];
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  cr_assert_geq (fd, 0, "open %s: %s", path, strerror (errno));
  ssize_t n = read (fd, buf, sizeof buf - 1);
  close (fd);
  cr_assert_geq (n, 0, "read %s", path);
  buf[n] = '\0';
  return buf;
}

static inline bool
kit_exists (const char *path)
{
  struct stat st;
  return lstat (path, &st) == 0;
}

/* ---- an in-memory tar ---- */

struct kit_tar
{
  struct archive *a;
  struct archive_entry *e;
  char *buf;
  size_t len;
  size_t cap;
};

static inline la_ssize_t
kit_tar_write_cb (struct archive *a, void *opaque, const void *buf, size_t len)
{
  struct kit_tar *t = opaque;
  (void)a;
  if (t->len + len > t->cap)
    {
      t->cap = (t->len + len) * 2;
      t->buf = realloc (t->buf, t->cap);
      cr_assert_not_null (t->buf);
    }
  memcpy (t->buf + t->len, buf, len);
  t->len += len;
  return len;
}

/* FORMAT: ARCHIVE_FORMAT_TAR_USTAR, _PAX_RESTRICTED, _PAX_INTERCHANGE, _GNUTAR. */
static inline void
kit_tar_begin (struct kit_tar *t, int format)
{
  memset (t, 0, sizeof *t);
  t->a = archive_write_new ();
  t->e = archive_entry_new ();
  cr_assert_eq (archive_write_set_format (t->a, format), ARCHIVE_OK);
  archive_write_set_bytes_in_last_block (t->a, 1);
  cr_assert_eq (archive_write_open2 (t->a, t, NULL, kit_tar_write_cb, NULL, NULL), ARCHIVE_OK);
}

/* Start an entry: NAME, TYPE (AE_IF*), full permission bits, owner, mtime. */
static inline struct archive_entry *
kit_tar_entry (struct kit_tar *t, const char *name, mode_t type, mode_t perm)
{
  archive_entry_clear (t->e);
  archive_entry_set_pathname (t->e, name);
  archive_entry_set_filetype (t->e, type);
  archive_entry_set_perm (t->e, perm);
  archive_entry_set_mtime (t->e, 1600000000, 0);
  return t->e;
}

/* Write the entry prepared with kit_tar_entry, with DATA (LEN bytes) when a file. */
static inline void
kit_tar_put (struct kit_tar *t, const void *data, size_t len)
{
  if (data != NULL)
    archive_entry_set_size (t->e, len);
  int r = archive_write_header (t->a, t->e);
  cr_assert (r == ARCHIVE_OK || r == ARCHIVE_WARN, "tar header %s: %s",
             archive_entry_pathname (t->e), archive_error_string (t->a));
  if (data != NULL && len > 0)
    cr_assert_eq (archive_write_data (t->a, data, len), (la_ssize_t)len);
}

static inline void
kit_tar_file (struct kit_tar *t, const char *name, const char *data, mode_t perm)
{
  kit_tar_entry (t, name, AE_IFREG, perm);
  kit_tar_put (t, data, strlen (data));
}

static inline void
kit_tar_dir (struct kit_tar *t, const char *name, mode_t perm)
{
  kit_tar_entry (t, name, AE_IFDIR, perm);
  kit_tar_put (t, NULL, 0);
}

static inline void
kit_tar_symlink (struct kit_tar *t, const char *name, const char *target)
{
  kit_tar_entry (t, name, AE_IFLNK, 0777);
  archive_entry_set_symlink (t->e, target);
  kit_tar_put (t, NULL, 0);
}

static inline void
kit_tar_hardlink (struct kit_tar *t, const char *name, const char *target)
{
  kit_tar_entry (t, name, AE_IFREG, 0644);
  archive_entry_set_hardlink (t->e, target);
  archive_entry_set_size (t->e, 0);
  kit_tar_put (t, NULL, 0);
}

/* Finish the archive; the bytes stay in T->buf / T->len until kit_tar_free. */
static inline void
kit_tar_end (struct kit_tar *t)
{
  cr_assert_eq (archive_write_close (t->a), ARCHIVE_OK);
  archive_write_free (t->a);
  archive_entry_free (t->e);
  t->a = NULL;
  t->e = NULL;
}

static inline void
kit_tar_free (struct kit_tar *t)
{
  free (t->buf);
  t->buf = NULL;
}

/* ---- feeding bytes through a pipe ---- */

/* Set: kit_apply_chunked's writer waits after each chunk until the applier has read
   it, as a slow client's upload arrives (under load the reader keeps up). */
static bool kit_drip;

struct kit_feed
{
  int fd;
  const char *buf;
  size_t len;
  const size_t *chunks; /* cycled; NULL = all at once */
  size_t nchunks;
  size_t written;
  int drip_fd; /* >= 0: the pipe's read end; each write waits until it was read out,
                  so every read of the applier returns one chunk at most */
};

static inline void *
kit_feed_thread (void *opaque)
{
  struct kit_feed *f = opaque;
  size_t i = 0;

  while (f->written < f->len)
    {
      size_t want = f->chunks ? f->chunks[i++ % f->nchunks] : f->len;
      if (want > f->len - f->written)
        want = f->len - f->written;
      ssize_t n = write (f->fd, f->buf + f->written, want);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break; /* the reader went away (EPIPE) */
      f->written += n;
      int left = 1;
      while (f->drip_fd >= 0 && ioctl (f->drip_fd, FIONREAD, &left) == 0 && left > 0)
        usleep (100);
    }
  close (f->fd);
  return NULL;
}

/* Apply BUF (LEN bytes) to ROOT through a pipe in CHUNKS-sized writes. Returns what
   pgd_diff_apply returned; *FED is how many bytes the writer managed to write. */
static inline int
kit_apply_chunked (const char *root, const void *buf, size_t len, const size_t *chunks,
                   size_t nchunks, const struct pgd_idmaps *maps, int64_t *size, size_t *fed,
                   struct pgd_err *err)
{
  int p[2];
  pthread_t th;
  struct kit_feed f
      = { .buf = buf, .len = len, .chunks = chunks, .nchunks = nchunks, .drip_fd = -1 };

  cr_assert_eq (pipe2 (p, O_CLOEXEC), 0);
  f.fd = p[1];
  if (kit_drip)
    f.drip_fd = p[0];
  cr_assert_eq (pthread_create (&th, NULL, kit_feed_thread, &f), 0);
  int r = pgd_diff_apply (root, p[0], maps, size, err);
  close (p[0]);
  pthread_join (th, NULL);
  if (fed)
    *fed = f.written;
  return r;
}

static inline int
kit_apply (const char *root, const void *buf, size_t len, int64_t *size, struct pgd_err *err)
{
  return kit_apply_chunked (root, buf, len, NULL, 0, NULL, size, NULL, err);
}

/* ---- loop-mounted ext4 ---- */

/* Make an empty ext4 image file IMG of MIB mebibytes. */
static inline void
kit_ext4_make (const char *img, int mib)
{
  kit_sh ("truncate -s %dM '%s' && mkfs.ext4 -q -F -E lazy_itable_init=0 '%s'", mib, img, img);
}

/* Loop-mount IMG on DIR (created); kit_teardown unmounts it. */
static inline void
kit_ext4_mount (const char *img, const char *dir, bool ro)
{
  cr_assert_lt (kit_nmounts, 4);
  mkdir (dir, 0755);
  kit_sh ("mount -o loop%s '%s' '%s'", ro ? ",ro" : "", img, dir);
  snprintf (kit_images[kit_nmounts], sizeof kit_images[0], "%s", img);
  snprintf (kit_mounts[kit_nmounts++], sizeof kit_mounts[0], "%s", dir);
}

static inline void
kit_ext4_umount (const char *dir)
{
  kit_sh ("umount '%s'", dir);
  for (int i = 0; i < kit_nmounts; i++)
    if (strcmp (kit_mounts[i], dir) == 0)
      {
        /* the loop device detaches asynchronously after umount: wait for it, or a
           new mount of the same image finds it "already mounted" */
        kit_sh ("for i in $(seq 100); do [ -z \"$(losetup -j '%s')\" ] && exit 0; sleep 0.05;"
                " done; exit 1",
                kit_images[i]);
        memmove (kit_mounts[i], kit_mounts[i + 1], (kit_nmounts - i - 1) * sizeof kit_mounts[0]);
        memmove (kit_images[i], kit_images[i + 1], (kit_nmounts - i - 1) * sizeof kit_images[0]);
        kit_nmounts--;
        break;
      }
}

/* ---- Changes as a string "A /x\nC /y\n…" ---- */

static inline char *
kit_changes_str (const struct pgd_changes *c)
{
  size_t cap = 64, len = 0;
  char *s = malloc (cap);
  cr_assert_not_null (s);
  s[0] = '\0';
  for (size_t i = 0; i < c->n; i++)
    {
      size_t need = len + strlen (c->items[i].path) + 4;
      if (need > cap)
        {
          cap = need * 2;
          s = realloc (s, cap);
          cr_assert_not_null (s);
        }
      len += sprintf (s + len, "%c %s\n", "CAD"[c->items[i].kind], c -> items[i].path);
    }
  return s;
}

/* Changes of NEW relative to OLD as a string (caller frees). */
static inline char *
kit_changes (const char *new_root, const char *old_root)
{
  struct pgd_changes c = { 0 };
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_diff_changes (new_root, old_root, &c, &err), 0, "changes: %s", err.msg);
  char *s = kit_changes_str (&c);
  pgd_changes_free (&c);
  return s;
}

#endif
