/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Diff: a PAX tar of the changes, written while the comparison walk runs. Entries
   come in the walk's order (parents first, names sorted bytewise per directory);
   deletions become empty ".wh.NAME" files. Only libarchive's block buffer and one
   read buffer are held in memory. */
#include "diff.h"

#include <archive.h>
#include <archive_entry.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "keymap.h"
#include "tree.h"
#include "util.h"

/* Bytes handed to write(2) at a time (libarchive pads nothing after the end blocks). */
#define PGD_TAR_BLOCK 65536
/* Bytes read from a file at a time. */
#define PGD_TAR_READ 65536

#define CAP_XATTR "security.capability"
#define CAP_V2 0x02000000u
#define CAP_V3 0x03000000u
#define CAP_REV_MASK 0xff000000u
#define CAP_V2_SIZE 20
#define CAP_V3_SIZE 24

struct tarout
{
  struct archive *a;
  struct archive_entry *e;
  const struct pgd_idmaps *maps;
  struct pgd_keymap links; /* (dev, ino) -> tar name of its first entry */
  int fd;
  bool failed; /* after an error nothing more reaches FD, end blocks included */
  time_t now;
  char *name; /* tar name being built */
  size_t namecap;
  char *buf; /* file data */
};

static la_ssize_t
write_cb (struct archive *a, void *opaque, const void *buf, size_t len)
{
  struct tarout *t = opaque;
  const char *p = buf;
  size_t left = len;

  if (t->failed)
    {
      archive_set_error (a, ECANCELED, "stream abandoned after an error");
      return -1;
    }
  while (left > 0)
    {
      ssize_t n = write (t->fd, p, left);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          archive_set_error (a, errno, "write to the stream");
          return -1;
        }
      p += n;
      left -= n;
    }
  return len;
}

/* libarchive's "went fine": OK, or WARN (e.g. a name not convertible to UTF-8). */
static bool
la_ok (int r)
{
  return r == ARCHIVE_OK || r == ARCHIVE_WARN;
}

static int
archive_fail (struct tarout *t, const char *what, const char *name, struct pgd_err *err)
{
  int e = archive_errno (t->a);
  const char *s = archive_error_string (t->a);

  /* a write error carries errno (EPIPE...); libarchive's own problems are in the text */
  if (e > 0 && e != EILSEQ)
    return pgd_error (err, e, "%s %s: %s", what, name, s ? s : "tar stream");
  pgd_error (err, 0, "%s %s: %s", what, name, s ? s : "libarchive error");
  err->errnum = EIO;
  return -1;
}

/* Set T->name to the tar name of absolute PATH: no leading '/', SUFFIX appended. */
static int
set_name (struct tarout *t, const char *dir, size_t dirlen, const char *mid, const char *base,
          const char *suffix, struct pgd_err *err)
{
  size_t need = dirlen + strlen (mid) + strlen (base) + strlen (suffix) + 2;

  if (need > t->namecap)
    {
      char *n = realloc (t->name, need * 2);
      if (n == NULL)
        return pgd_error (err, ENOMEM, "tar name for %s", base);
      t->name = n;
      t->namecap = need * 2;
    }
  memcpy (t->name, dir, dirlen);
  strcpy (t->name + dirlen, mid);
  strcat (t->name, base);
  strcat (t->name, suffix);
  return 0;
}

static int
map_owner (struct tarout *t, const struct stat *st, const char *path, struct pgd_err *err)
{
  int64_t uid = st->st_uid, gid = st->st_gid;

  if (t->maps != NULL)
    {
      uid = pgd_idmap_to_container (t->maps->uid, t->maps->nuid, st->st_uid);
      gid = pgd_idmap_to_container (t->maps->gid, t->maps->ngid, st->st_gid);
    }
  if (uid < 0)
    return pgd_error (err, EINVAL, "%s: host uid %u has no container mapping", path,
                      (unsigned)st->st_uid);
  if (gid < 0)
    return pgd_error (err, EINVAL, "%s: host gid %u has no container mapping", path,
                      (unsigned)st->st_gid);
  archive_entry_set_uid (t->e, uid);
  archive_entry_set_gid (t->e, gid);
  return 0;
}

/* Add the file capability of FD, v3 (namespaced) made v2 as dockerd does. */
static int
add_capability (struct tarout *t, int fd, const char *path, struct pgd_err *err)
{
  unsigned char cap[64];
  ssize_t n = fgetxattr (fd, CAP_XATTR, cap, sizeof cap);

  if (n < 0)
    {
      if (errno == ENODATA || errno == ENOTSUP)
        return 0;
      return pgd_error (err, errno, "read %s of %s", CAP_XATTR, path);
    }
  if (n == CAP_V3_SIZE)
    {
      uint32_t magic;
      memcpy (&magic, cap, sizeof magic);
      magic = le32toh (magic);
      if ((magic & CAP_REV_MASK) == CAP_V3)
        {
          magic = htole32 ((magic & ~CAP_REV_MASK) | CAP_V2);
          memcpy (cap, &magic, sizeof magic);
          n = CAP_V2_SIZE;
        }
    }
  archive_entry_xattr_add_entry (t->e, CAP_XATTR, cap, n);
  return 0;
}

/* Copy exactly SIZE bytes of FD into the current entry (zeros if it shrank). */
static int
copy_data (struct tarout *t, int fd, int64_t size, const char *path, struct pgd_err *err)
{
  int64_t done = 0;

  while (done < size)
    {
      size_t want = size - done < PGD_TAR_READ ? (size_t)(size - done) : PGD_TAR_READ;
      ssize_t n = read (fd, t->buf, want);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return pgd_error (err, errno, "read %s", path);
      if (n == 0)
        break; /* finish_entry pads the rest with zeros */
      if (archive_write_data (t->a, t->buf, n) != n)
        return archive_fail (t, "write tar data of", path, err);
      done += n;
    }
  return 0;
}

static int
write_whiteout (struct tarout *t, const char *path, struct pgd_err *err)
{
  const char *slash = strrchr (path, '/');

  size_t dirlen = slash == path ? 0 : (size_t)(slash - path - 1);

  if (set_name (t, path + 1, dirlen, dirlen ? "/.wh." : ".wh.", slash + 1, "", err) < 0)
    return -1;
  archive_entry_clear (t->e);
  archive_entry_set_pathname (t->e, t->name);
  archive_entry_set_filetype (t->e, AE_IFREG);
  archive_entry_set_perm (t->e, 0);
  archive_entry_set_size (t->e, 0);
  archive_entry_set_mtime (t->e, t->now, 0);
  if (!la_ok (archive_write_header (t->a, t->e)))
    return archive_fail (t, "write whiteout", t->name, err);
  return 0;
}

/* Fill the entry for a hardlink when ST's inode was already written; *LINKED says. */
static int
link_or_remember (struct tarout *t, const struct stat *st, bool *linked, struct pgd_err *err)
{
  uint64_t key[2] = { st->st_dev, st->st_ino };
  const char *first;

  *linked = false;
  if (S_ISDIR (st->st_mode) || st->st_nlink < 2)
    return 0;
  if (pgd_keymap_get (&t->links, key, sizeof key, &first))
    {
      archive_entry_set_hardlink (t->e, first);
      archive_entry_set_size (t->e, 0);
      *linked = true;
      return 0;
    }
  return pgd_keymap_put (&t->links, key, sizeof key, t->name, NULL, err);
}

static int
write_entry (void *opaque, const struct pgd_tree_change *c, struct pgd_err *err)
{
  struct tarout *t = opaque;
  const struct stat *st = c->st;
  cleanup_close int fd = -1;
  bool linked;

  if (c->kind == PGD_CHANGE_DELETE)
    return write_whiteout (t, c->path, err);
  if (S_ISSOCK (st->st_mode))
    return 0;
  if (set_name (t, c->path + 1, strlen (c->path + 1), "", "", S_ISDIR (st->st_mode) ? "/" : "", err)
      < 0)
    return -1;
  archive_entry_clear (t->e);
  archive_entry_set_pathname (t->e, t->name);
  archive_entry_set_mode (t->e, st->st_mode);
  archive_entry_set_mtime (t->e, st->st_mtim.tv_sec, 0);
  if (map_owner (t, st, c->path, err) < 0)
    return -1;
  if (S_ISCHR (st->st_mode) || S_ISBLK (st->st_mode))
    archive_entry_set_rdev (t->e, st->st_rdev);
  if (link_or_remember (t, st, &linked, err) < 0)
    return -1;
  if (S_ISLNK (st->st_mode) && !linked)
    {
      char target[PATH_MAX];
      ssize_t n = readlinkat (c->dirfd, c->name, target, sizeof target - 1);
      if (n < 0)
        return pgd_error (err, errno, "readlink %s", c->path);
      target[n] = '\0';
      archive_entry_set_symlink (t->e, target);
    }
  if (S_ISREG (st->st_mode) && !linked)
    {
      fd = openat (c->dirfd, c->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
      if (fd < 0)
        return pgd_error (err, errno, "open %s", c->path);
      if (add_capability (t, fd, c->path, err) < 0)
        return -1;
      archive_entry_set_size (t->e, st->st_size);
    }
  if (!la_ok (archive_write_header (t->a, t->e)))
    return archive_fail (t, "write tar header of", c->path, err);
  if (fd >= 0 && copy_data (t, fd, st->st_size, c->path, err) < 0)
    return -1;
  if (!la_ok (archive_write_finish_entry (t->a)))
    return archive_fail (t, "finish tar entry", c->path, err);
  return 0;
}

static int
stream_open (struct tarout *t, struct pgd_err *err)
{
  t->a = archive_write_new ();
  t->e = archive_entry_new ();
  t->buf = malloc (PGD_TAR_READ);
  if (t->a == NULL || t->e == NULL || t->buf == NULL)
    return pgd_error (err, ENOMEM, "tar writer");
  if (archive_write_set_format_pax_restricted (t->a) != ARCHIVE_OK
      || archive_write_set_format_option (t->a, "pax", "xattrheader", "SCHILY") != ARCHIVE_OK
      || archive_write_set_bytes_per_block (t->a, PGD_TAR_BLOCK) != ARCHIVE_OK
      || archive_write_set_bytes_in_last_block (t->a, 1) != ARCHIVE_OK
      || archive_write_open2 (t->a, t, NULL, write_cb, NULL, NULL) != ARCHIVE_OK)
    return archive_fail (t, "open", "tar writer", err);
  return 0;
}

/* Write the tar with SIGPIPE held back: a consumer that goes away must give EPIPE
   here, not kill the process. */
static int
stream_all (struct tarout *t, const char *new_root, const char *old_root,
            const struct pgd_diff_hint *hint, struct pgd_err *err)
{
  if (stream_open (t, err) < 0)
    return -1;
  if (pgd_tree_walk_hint (new_root, old_root, hint, 0, write_entry, t, NULL, err) < 0)
    return -1;
  if (archive_write_close (t->a) != ARCHIVE_OK)
    return archive_fail (t, "finish", "tar stream", err);
  return 0;
}

int
pgd_diff_write (const char *new_root, const char *old_root, int fd, const struct pgd_idmaps *maps,
                struct pgd_err *err)
{
  return pgd_diff_write_hint (new_root, old_root, NULL, 0, fd, maps, err);
}

int
pgd_diff_write_hint (const char *new_root, const char *old_root, const struct pgd_diff_hint *hint,
                     time_t now, int fd, const struct pgd_idmaps *maps, struct pgd_err *err)
{
  struct tarout t = { .maps = maps, .fd = fd, .now = now ? now : time (NULL) };
  sigset_t pipe_set, old_mask, pending;
  bool was_pending;
  int r;

  sigemptyset (&pipe_set);
  sigaddset (&pipe_set, SIGPIPE);
  pthread_sigmask (SIG_BLOCK, &pipe_set, &old_mask);
  sigpending (&pending);
  was_pending = sigismember (&pending, SIGPIPE);

  r = stream_all (&t, new_root, old_root, hint, err);
  if (t.a != NULL)
    {
      if (r < 0)
        {
          /* close (which frees libarchive's block buffer, unlike free after
             archive_write_fail) but let no end-of-archive blocks out */
          t.failed = true;
          archive_write_close (t.a);
        }
      archive_write_free (t.a);
    }
  if (t.e != NULL)
    archive_entry_free (t.e);
  free (t.buf);
  free (t.name);
  pgd_keymap_free (&t.links);

  sigpending (&pending);
  if (!was_pending && sigismember (&pending, SIGPIPE))
    {
      const struct timespec zero = { 0, 0 };
      sigtimedwait (&pipe_set, NULL, &zero);
    }
  pthread_sigmask (SIG_SETMASK, &old_mask, NULL);
  if (r < 0)
    return pgd_error_wrap (err, "diff of %s", new_root);
  return 0;
}
