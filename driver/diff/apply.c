/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ApplyDiff: unpack a layer tar into ROOT the way dockerd's own unpacker does
   (PROTOCOL.md §10.2), with libarchive reading straight from the descriptor.
   Every path is resolved through descriptors from ROOT, never through a symlink
   and never above ROOT, so a hostile archive can fail but cannot reach outside. */
#include "diff.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "beneath.h"
#include "keymap.h"
#include "log.h"
#include "unpack.h"
#include "util.h"

/* Bytes read from the stream at a time. */
#define PGD_APPLY_READ 65536

#define WH_PREFIX ".wh."
#define WH_META ".wh..wh."
#define WH_OPAQUE ".wh..wh..opq"
#define WH_PLNK ".wh..wh.plnk"

static bool
has_prefix (const char *s, const char *prefix)
{
  return strncmp (s, prefix, strlen (prefix)) == 0;
}

static la_ssize_t
read_cb (struct archive *a, void *opaque, const void **buf)
{
  struct pgd_apply *ap = opaque;
  /* two buffers in turn: libarchive may still look at the previous one, and the
     end-of-archive check needs the bytes just before where it stopped. Each is filled
     (up to the end of the stream) however the stream arrives: a slow client's small
     pieces would leave the 1024 end-of-archive bytes spread over many reads */
  int next = !ap->incur;
  char *dst = ap->inbuf + (size_t)next * PGD_APPLY_READ;
  size_t got = 0;

  while (got < PGD_APPLY_READ)
    {
      ssize_t n = read (ap->fd, dst + got, PGD_APPLY_READ - got);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          archive_set_error (a, errno, "read the tar stream");
          return -1;
        }
      if (n == 0)
        break;
      got += (size_t)n;
    }
  ap->input_eof = got == 0;
  ap->incur = next;
  ap->inoff[next] = ap->delivered;
  ap->inlen[next] = got;
  ap->delivered += got;
  *buf = dst;
  return (la_ssize_t)got;
}

/* The byte at stream offset OFF if a read buffer still holds it, else -1. */
static int
stream_byte (const struct pgd_apply *ap, int64_t off)
{
  for (int i = 0; i < 2; i++)
    if (off >= ap->inoff[i] && off < ap->inoff[i] + (int64_t)ap->inlen[i])
      return (unsigned char)ap->inbuf[(size_t)i * PGD_APPLY_READ + (off - ap->inoff[i])];
  return -1;
}

/* libarchive reports EOF both at the end-of-archive blocks and when the stream just
   stops between entries; only the first is a whole archive (PROTOCOL.md §4.2). An
   empty stream is accepted as an empty layer. */
static int
check_end_of_archive (struct pgd_apply *ap, const char *last, struct pgd_err *err)
{
  int64_t end = archive_filter_bytes (ap->a, 0);

  if (end == 0 && ap->delivered == 0)
    return 0;
  if (end < 1024 || end % 512 != 0)
    return pgd_error (err, EINVAL, "tar stream ends after %.256s without the end-of-archive blocks",
                      last);
  for (int64_t off = end - 1024; off < end; off++)
    if (stream_byte (ap, off) != 0)
      return pgd_error (err, EINVAL,
                        "tar stream ends after %.256s without the end-of-archive blocks", last);
  return 0;
}

/* Read and discard what follows the end-of-archive blocks, up to EOF. */
static int
drain (struct pgd_apply *ap, struct pgd_err *err)
{
  while (!ap->input_eof)
    {
      /* the buffer libarchive is not using: its last look was at the current one */
      ssize_t n = read (ap->fd, ap->inbuf + (size_t)!ap->incur * PGD_APPLY_READ, PGD_APPLY_READ);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return pgd_error (err, errno, "read trailing bytes of the tar stream");
      ap->input_eof = n == 0;
    }
  return 0;
}

static int
remember_dir_times (struct pgd_apply *ap, struct archive_entry *e, const char *name,
                    struct pgd_err *err)
{
  struct pgd_dirtime *d;

  if (ap->ndirs == ap->capdirs)
    {
      size_t cap = ap->capdirs ? ap->capdirs * 2 : 64;
      d = realloc (ap->dirs, cap * sizeof *d);
      if (d == NULL)
        return pgd_error (err, ENOMEM, "remember directory %s", name);
      ap->dirs = d;
      ap->capdirs = cap;
    }
  d = &ap->dirs[ap->ndirs];
  d->name = strdup (name);
  if (d->name == NULL)
    return pgd_error (err, ENOMEM, "remember directory %s", name);
  pgd_apply_entry_times (e, d->ts);
  ap->ndirs++;
  return 0;
}

/* After every entry: directory times, which creating their children changed. A
   directory that is gone or was replaced by something else meanwhile is skipped. */
static int
apply_dir_times (struct pgd_apply *ap, struct pgd_err *err)
{
  for (size_t i = 0; i < ap->ndirs; i++)
    {
      struct pgd_err ignored;
      cleanup_close int fd = -1;

      if (pgd_open_dir_beneath (ap->rootfd, ap->dirs[i].name, false, &fd, &ignored) < 0)
        continue;
      if (futimens (fd, ap->dirs[i].ts) < 0)
        return pgd_error (err, errno, "set times of directory %s", ap->dirs[i].name);
    }
  return 0;
}

/* Delete every child of directory DFD (REL below the root) that this archive did not
   unpack, looking inside the unpacked directories too, as dockerd's walk does. */
static int
opaque_clear (struct pgd_apply *ap, int dfd, const char *rel, struct pgd_err *err)
{
  cleanup_dir DIR *d = pgd_opendir_dup (dfd, rel, err);
  struct dirent *de;

  if (d == NULL)
    return -1;
  while ((errno = 0, de = readdir (d)) != NULL)
    {
      const char *n = de->d_name;
      cleanup_free char *child = NULL;
      struct stat st;

      if (strcmp (n, ".") == 0 || strcmp (n, "..") == 0
          || (*rel == '\0' && strcmp (n, "lost+found") == 0))
        continue;
      if (asprintf (&child, "%s%s%s", rel, *rel ? "/" : "", n) < 0)
        return pgd_error (err, ENOMEM, "opaque %s", rel);
      if (!pgd_keymap_get (&ap->unpacked, child, strlen (child), NULL))
        {
          if (pgd_remove_at (dfd, n, child, err) < 0)
            return -1;
          continue;
        }
      if (fstatat (dfd, n, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return pgd_error (err, errno, "stat %s", child);
      if (!S_ISDIR (st.st_mode))
        continue;
      cleanup_close int sub = openat (dfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0)
        return pgd_error (err, errno, "open %s", child);
      if (opaque_clear (ap, sub, child, err) < 0)
        return -1;
    }
  if (errno != 0)
    return pgd_error (err, errno, "readdir %s", rel);
  return 0;
}

/* A whiteout BASE in directory PFD (DIR below the root). */
static int
whiteout (struct pgd_apply *ap, int pfd, const char *dir, const char *base, struct pgd_err *err)
{
  const char *victim = base + strlen (WH_PREFIX);
  cleanup_free char *shown = NULL;

  if (strcmp (base, WH_OPAQUE) == 0)
    return opaque_clear (ap, pfd, dir, err);
  if (*victim == '\0' || strcmp (victim, ".") == 0 || strcmp (victim, "..") == 0)
    return pgd_error (err, EINVAL, "invalid whiteout");
  if (asprintf (&shown, "%s%s%s", dir, *dir ? "/" : "", victim) < 0)
    return pgd_error (err, ENOMEM, "whiteout");
  return pgd_remove_at (pfd, victim, shown, err);
}

/* The root itself ("." or "./" in the archive): only a directory may name it. */
static int
apply_root (struct pgd_apply *ap, struct archive_entry *e, struct pgd_err *err)
{
  struct pgd_meta_at at = { .fd = ap->rootfd, .pfd = -1, .base = "", .dir = true };

  if (archive_entry_hardlink (e) != NULL || archive_entry_filetype (e) != AE_IFDIR)
    return pgd_error (err, EINVAL, "only a directory can replace the root");
  if (pgd_apply_meta (ap, e, &at, err) < 0)
    return -1;
  return remember_dir_times (ap, e, "", err);
}

static int
apply_entry (struct pgd_apply *ap, struct archive_entry *e, const char *raw, char *name,
             size_t namesize, struct pgd_err *err)
{
  const char *base;
  char *slash;
  cleanup_close int pfd = -1;
  struct stat st;
  bool is_dir = archive_entry_hardlink (e) == NULL && archive_entry_filetype (e) == AE_IFDIR;

  if (raw[0] == '/')
    return pgd_error (err, EPERM, "absolute name");
  if (pgd_path_clean (raw, name, namesize) < 0)
    return pgd_error (err, errno == ERANGE ? EPERM : errno,
                      errno == ERANGE ? "name escapes the root" : "name");
  if (has_prefix (name, WH_META))
    {
      if (has_prefix (name, WH_PLNK "/") && archive_entry_hardlink (e) == NULL
          && archive_entry_filetype (e) == AE_IFREG)
        return pgd_apply_plnk_keep (ap, e, name, err);
      if (strcmp (name, WH_OPAQUE) != 0)
        return 0; /* other AUFS metadata */
    }
  if (*name == '\0')
    return apply_root (ap, e, err);

  slash = strrchr (name, '/');
  base = slash ? slash + 1 : name;
  /* NAME is split in place into its directory and BASE while the parent is used */
  if (slash)
    *slash = '\0';
  const char *dir = slash ? name : "";
  int r = pgd_open_dir_beneath (ap->rootfd, dir, true, &pfd, err);
  if (r == 0 && has_prefix (base, WH_PREFIX))
    r = whiteout (ap, pfd, dir, base, err) < 0 ? -1 : 1;
  if (slash)
    *slash = '/';
  if (r != 0)
    return r < 0 ? -1 : 0;

  if (fstatat (pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0)
    {
      if (!(S_ISDIR (st.st_mode) && is_dir) && pgd_remove_at (pfd, base, name, err) < 0)
        return -1;
    }
  else if (errno != ENOENT)
    return pgd_error (err, errno, "stat");

  if (pgd_apply_create (ap, e, pfd, base, name, err) < 0)
    return -1;
  if (pgd_keymap_put (&ap->unpacked, name, strlen (name), NULL, NULL, err) < 0)
    return -1;
  return is_dir ? remember_dir_times (ap, e, name, err) : 0;
}

/* Header name of entry E: raw bytes when libarchive could not convert them. */
static const char *
entry_name (struct archive_entry *e)
{
  const char *p = archive_entry_pathname (e);

  return p ? p : archive_entry_pathname_utf8 (e);
}

static int
apply_all (struct pgd_apply *ap, struct pgd_err *err)
{
  cleanup_free char *name = NULL;
  cleanup_free char *last = strdup ("(start of archive)");
  size_t namesize = 0;

  if (last == NULL)
    return pgd_error (err, ENOMEM, "apply");
  for (;;)
    {
      struct archive_entry *e;
      const char *raw;
      int r = archive_read_next_header (ap->a, &e);

      if (r == ARCHIVE_EOF)
        {
          if (check_end_of_archive (ap, last, err) < 0)
            return -1;
          break;
        }
      if (!pgd_la_ok (r))
        {
          char what[300];
          snprintf (what, sizeof what, "entry after %.256s: read tar header", last);
          return pgd_apply_fail (ap, what, err);
        }
      raw = entry_name (e);
      if (raw == NULL)
        return pgd_error (err, EINVAL, "tar entry without a name after %.256s", last);
      free (last);
      if ((last = strdup (raw)) == NULL)
        return pgd_error (err, ENOMEM, "apply");
      if (strlen (raw) + 1 > namesize)
        {
          free (name);
          namesize = strlen (raw) + 1;
          if ((name = malloc (namesize)) == NULL)
            return pgd_error (err, ENOMEM, "apply %.256s", raw);
        }
      if (archive_entry_size_is_set (e))
        ap->size += archive_entry_size (e);
      if (apply_entry (ap, e, raw, name, namesize, err) < 0)
        return pgd_error_wrap (err, "entry %.256s", raw);
    }
  if (apply_dir_times (ap, err) < 0)
    return -1;
  return drain (ap, err);
}

static int
open_reader (struct pgd_apply *ap, struct pgd_err *err)
{
  ap->a = archive_read_new ();
  ap->inbuf = malloc (2 * PGD_APPLY_READ);
  if (ap->a == NULL || ap->inbuf == NULL)
    return pgd_error (err, ENOMEM, "tar reader");
  if (archive_read_support_format_tar (ap->a) != ARCHIVE_OK
      || archive_read_support_format_empty (ap->a) != ARCHIVE_OK)
    return pgd_apply_fail (ap, "tar reader", err);
  if (archive_read_open2 (ap->a, ap, NULL, read_cb, NULL, NULL) != ARCHIVE_OK)
    return pgd_apply_fail (ap, "read the tar stream", err);
  return 0;
}

int
pgd_diff_apply (const char *root, int fd, const struct pgd_idmaps *maps, int64_t *size,
                struct pgd_err *err)
{
  struct pgd_apply ap = { .maps = maps, .fd = fd, .rootfd = -1 };
  int r;

  ap.rootfd = open (root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (ap.rootfd < 0)
    r = pgd_error (err, errno, "open %s", root);
  else
    r = open_reader (&ap, err) < 0 ? -1 : apply_all (&ap, err);

  if (r < 0 && ap.inbuf != NULL)
    {
      /* whoever feeds FD must never block on us: read the rest, as on success */
      struct pgd_err ignored;
      if (drain (&ap, &ignored) < 0)
        pgd_log (PGD_LOG_WARN, "apply to %s: %s", root, ignored.msg);
    }
  if (ap.a != NULL)
    archive_read_free (ap.a);
  free (ap.inbuf);
  for (size_t i = 0; i < ap.ndirs; i++)
    free (ap.dirs[i].name);
  free (ap.dirs);
  pgd_apply_plnk_free (&ap);
  pgd_keymap_free (&ap.unpacked);
  if (ap.rootfd >= 0)
    close (ap.rootfd);
  if (r < 0)
    return pgd_error_wrap (err, "apply to %s", root);
  *size = ap.size;
  return 0;
}
