/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ApplyDiff, one node at a time: every node is made as BASE inside an already
   opened parent directory, so no path is ever resolved by the kernel from here. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "beneath.h"
#include "unpack.h"
#include "util.h"

/* Mode of a freshly created node until the entry's own mode is applied. */
#define PGD_APPLY_INITIAL_MODE 0600
#define PGD_APPLY_INITIAL_DIR_MODE 0700
#define PGD_COPY_BUF 65536
#define WH_PLNK ".wh..wh.plnk"

static const char *
link_name (const char *mbs, const char *utf8)
{
  return mbs ? mbs : utf8;
}

/* Copy the kept AUFS source SRC into DST, SIZE bytes. */
static int
copy_plnk (int src, int dst, int64_t size, struct pgd_err *err)
{
  cleanup_free char *buf = malloc (PGD_COPY_BUF);
  int64_t off = 0;

  if (buf == NULL)
    return pgd_error (err, ENOMEM, "copy");
  while (off < size)
    {
      ssize_t n = pread (src, buf, PGD_COPY_BUF, off);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return pgd_error (err, errno, "read kept AUFS hardlink source");
      if (n == 0)
        break;
      for (ssize_t done = 0; done < n;)
        {
          ssize_t w = pwrite (dst, buf + done, n - done, off + done);
          if (w < 0 && errno == EINTR)
            continue;
          if (w < 0)
            return pgd_error (err, errno, "write");
          done += w;
        }
      off += n;
    }
  if (ftruncate (dst, size) < 0)
    return pgd_error (err, errno, "truncate");
  return 0;
}

/* A regular file with the data of the current entry, or of SRCFD when >= 0; metadata
   from META (the entry itself, or the kept AUFS source's header). */
static int
create_file (struct pgd_apply *ap, struct archive_entry *meta, int pfd, const char *base, int srcfd,
             struct pgd_err *err)
{
  struct pgd_meta_at at = { .pfd = pfd, .base = base };
  cleanup_close int fd = openat (pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                                 PGD_APPLY_INITIAL_MODE);
  int64_t size = archive_entry_size_is_set (meta) ? archive_entry_size (meta) : 0;

  if (fd < 0)
    return pgd_error (err, errno, "create file");
  if (srcfd >= 0 ? copy_plnk (srcfd, fd, size, err) < 0 : pgd_apply_data (ap, fd, size, err) < 0)
    return -1;
  at.fd = fd;
  return pgd_apply_meta (ap, meta, &at, err);
}

static int
create_dir (struct pgd_apply *ap, struct archive_entry *e, int pfd, const char *base,
            struct pgd_err *err)
{
  struct pgd_meta_at at = { .pfd = pfd, .base = base, .dir = true };
  cleanup_close int fd = -1;

  /* an existing directory stays (dir over dir) and only gets the new metadata */
  if (mkdirat (pfd, base, PGD_APPLY_INITIAL_DIR_MODE) < 0 && errno != EEXIST)
    return pgd_error (err, errno, "create directory");
  fd = openat (pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return pgd_error (err, errno, "open directory");
  at.fd = fd;
  return pgd_apply_meta (ap, e, &at, err);
}

/* dockerd's check: the target, taken lexically from the link's directory (even when
   absolute), must not climb above the root. */
static bool
symlink_inside (const char *name, const char *target)
{
  const char *slash = strrchr (name, '/');
  size_t dirlen = slash ? (size_t)(slash - name) : 0;
  size_t size = dirlen + strlen (target) + 2;
  cleanup_free char *joined = malloc (size);
  cleanup_free char *clean = malloc (size);

  if (joined == NULL || clean == NULL)
    return false;
  memcpy (joined, name, dirlen);
  joined[dirlen] = '/';
  strcpy (joined + dirlen + 1, target);
  return pgd_path_clean (joined, clean, size) == 0;
}

static int
create_symlink (struct pgd_apply *ap, struct archive_entry *e, int pfd, const char *base,
                const char *name, struct pgd_err *err)
{
  struct pgd_meta_at at = { .fd = -1, .pfd = pfd, .base = base, .symlink = true };
  const char *target = link_name (archive_entry_symlink (e), archive_entry_symlink_utf8 (e));

  if (target == NULL || *target == '\0')
    return pgd_error (err, EINVAL, "symlink without a target");
  if (!symlink_inside (name, target))
    return pgd_error (err, EPERM, "invalid symlink -> %.256s", target);
  if (symlinkat (target, pfd, base) < 0)
    return pgd_error (err, errno, "symlink -> %.256s", target);
  return pgd_apply_meta (ap, e, &at, err);
}

static int
create_node (struct pgd_apply *ap, struct archive_entry *e, int pfd, const char *base, mode_t type,
             struct pgd_err *err)
{
  struct pgd_meta_at at = { .fd = -1, .pfd = pfd, .base = base };
  dev_t dev = type == S_IFIFO ? 0 : archive_entry_rdev (e);

  if (mknodat (pfd, base, type | PGD_APPLY_INITIAL_MODE, dev) < 0)
    return pgd_error (err, errno, "create %s", type == S_IFIFO ? "fifo" : "device node");
  return pgd_apply_meta (ap, e, &at, err);
}

static const struct pgd_plnk *
find_plnk (struct pgd_apply *ap, const char *base)
{
  for (size_t i = ap->nplnk; i-- > 0;) /* the latest of one name wins */
    if (strcmp (ap->plnk[i].base, base) == 0)
      return &ap->plnk[i];
  return NULL;
}

static int
create_hardlink (struct pgd_apply *ap, struct archive_entry *e, int pfd, const char *base,
                 const char *raw, struct pgd_err *err)
{
  struct pgd_meta_at at = { .fd = -1, .pfd = pfd, .base = base };
  size_t size = strlen (raw) + 1;
  cleanup_free char *target = malloc (size);
  cleanup_close int tfd = -1;
  const char *tbase;
  char *slash;
  struct stat st;

  if (target == NULL)
    return pgd_error (err, ENOMEM, "hardlink");
  if (raw[0] == '/' || pgd_path_clean (raw, target, size) < 0 || *target == '\0')
    return pgd_error (err, EPERM, "invalid hardlink -> %.256s", raw);
  if (strncmp (target, WH_PLNK, strlen (WH_PLNK)) == 0)
    {
      const char *b = strrchr (target, '/');
      const struct pgd_plnk *src = find_plnk (ap, b ? b + 1 : target);
      if (src == NULL)
        return pgd_error (err, EINVAL, "invalid AUFS hardlink -> %.256s", raw);
      return create_file (ap, src->e, pfd, base, src->fd, err);
    }
  slash = strrchr (target, '/');
  tbase = slash ? slash + 1 : target;
  if (slash)
    *slash = '\0';
  int r = pgd_open_dir_beneath (ap->rootfd, slash ? target : "", false, &tfd, err);
  if (slash)
    *slash = '/';
  if (r < 0)
    return pgd_error_wrap (err, "hardlink -> %.256s", raw);
  if (linkat (tfd, tbase, pfd, base, 0) < 0)
    return pgd_error (err, errno, "hardlink -> %.256s", raw);
  if (fstatat (pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return pgd_error (err, errno, "stat new hardlink");
  at.symlink = at.no_times = S_ISLNK (st.st_mode);
  return pgd_apply_meta (ap, e, &at, err);
}

int
pgd_apply_create (struct pgd_apply *ap, struct archive_entry *e, int pfd, const char *base,
                  const char *name, struct pgd_err *err)
{
  const char *hl = link_name (archive_entry_hardlink (e), archive_entry_hardlink_utf8 (e));
  mode_t type = archive_entry_filetype (e);

  if (hl != NULL)
    return create_hardlink (ap, e, pfd, base, hl, err);
  switch (type)
    {
    case AE_IFREG:
      return create_file (ap, e, pfd, base, -1, err);
    case AE_IFDIR:
      return create_dir (ap, e, pfd, base, err);
    case AE_IFLNK:
      return create_symlink (ap, e, pfd, base, name, err);
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO:
      return create_node (ap, e, pfd, base, type, err);
    default:
      return pgd_error (err, EINVAL, "unhandled tar entry type 0%o", (unsigned)type);
    }
}

int
pgd_apply_plnk_keep (struct pgd_apply *ap, struct archive_entry *e, const char *name,
                     struct pgd_err *err)
{
  const char *base = strrchr (name, '/') + 1;
  int64_t size = archive_entry_size_is_set (e) ? archive_entry_size (e) : 0;
  struct pgd_plnk p = { .fd = -1 };
  struct pgd_plnk *n;

  /* an unnamed file on the layer itself: never visible, gone when closed */
  p.fd = openat (ap->rootfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, PGD_APPLY_INITIAL_MODE);
  if (p.fd < 0)
    return pgd_error (err, errno, "keep AUFS hardlink source");
  if (pgd_apply_data (ap, p.fd, size, err) < 0)
    goto fail;
  p.base = strdup (base);
  p.e = archive_entry_clone (e);
  n = realloc (ap->plnk, (ap->nplnk + 1) * sizeof *n);
  if (p.base == NULL || p.e == NULL || n == NULL)
    {
      pgd_error (err, ENOMEM, "keep AUFS hardlink source");
      goto fail;
    }
  ap->plnk = n;
  ap->plnk[ap->nplnk++] = p;
  return 0;

fail:
  close (p.fd);
  free (p.base);
  if (p.e)
    archive_entry_free (p.e);
  return -1;
}

void
pgd_apply_plnk_free (struct pgd_apply *ap)
{
  for (size_t i = 0; i < ap->nplnk; i++)
    {
      close (ap->plnk[i].fd);
      free (ap->plnk[i].base);
      archive_entry_free (ap->plnk[i].e);
    }
  free (ap->plnk);
  ap->plnk = NULL;
  ap->nplnk = 0;
}
