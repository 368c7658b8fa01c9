/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ApplyDiff, one entry's metadata and data: owner (mapped to the host), xattrs, mode and
   times in dockerd's order, and the data blocks with their holes. Used by apply.c (the
   stream and the per-entry rules) and applyfs.c (creating each kind of node). */
#include "unpack.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "beneath.h"
#include "util.h"

int
pgd_apply_fail (struct pgd_apply *ap, const char *what, struct pgd_err *err)
{
  int e = archive_errno (ap->a);
  const char *s = archive_error_string (ap->a);

  /* libarchive reports format problems as EILSEQ or -1: the text says it all */
  if (e > 0 && e != EILSEQ)
    return pgd_error (err, e, "%s: %s", what, s ? s : "tar stream");
  pgd_error (err, 0, "%s: %s", what, s ? s : "malformed tar");
  err->errnum = EINVAL;
  return -1;
}

/* Owner of entry E on the host. */
static int
host_owner (struct pgd_apply *ap, struct archive_entry *e, uid_t *uid, gid_t *gid,
            struct pgd_err *err)
{
  int64_t u = archive_entry_uid (e), g = archive_entry_gid (e);

  if (u < 0 || u > UINT32_MAX || g < 0 || g > UINT32_MAX)
    return pgd_error (err, EINVAL, "owner %lld:%lld out of range", (long long)u, (long long)g);
  if (ap->maps != NULL)
    {
      u = pgd_idmap_to_host (ap->maps->uid, ap->maps->nuid, u);
      g = pgd_idmap_to_host (ap->maps->gid, ap->maps->ngid, g);
      if (u < 0 || g < 0)
        return pgd_error (err, EINVAL, "owner %lld:%lld has no host mapping",
                          (long long)archive_entry_uid (e), (long long)archive_entry_gid (e));
    }
  *uid = u;
  *gid = g;
  return 0;
}

/* Access, then modification time; access is never earlier than modification. */
void
pgd_apply_entry_times (struct archive_entry *e, struct timespec ts[2])
{
  ts[1].tv_sec = archive_entry_mtime_is_set (e) ? archive_entry_mtime (e) : 0;
  ts[1].tv_nsec = archive_entry_mtime_is_set (e) ? archive_entry_mtime_nsec (e) : 0;
  ts[0] = ts[1];
  if (archive_entry_atime_is_set (e)
      && (archive_entry_atime (e) > ts[1].tv_sec
          || (archive_entry_atime (e) == ts[1].tv_sec
              && archive_entry_atime_nsec (e) > ts[1].tv_nsec)))
    {
      ts[0].tv_sec = archive_entry_atime (e);
      ts[0].tv_nsec = archive_entry_atime_nsec (e);
    }
}

static int
set_xattrs (struct archive_entry *e, int fd, int pfd, const char *base, struct pgd_err *err)
{
  const char *name;
  const void *value;
  size_t size;
  char proc[PATH_MAX];

  archive_entry_xattr_reset (e);
  while (archive_entry_xattr_next (e, &name, &value, &size) == ARCHIVE_OK)
    {
      int r;
      if (fd >= 0)
        r = fsetxattr (fd, name, value, size, 0);
      else if (pgd_fd_path (proc, sizeof proc, pfd, base) != NULL)
        r = lsetxattr (proc, name, value, size, 0);
      else
        r = (errno = ENAMETOOLONG, -1);
      if (r < 0 && errno != ENOTSUP && errno != EPERM)
        return pgd_error (err, errno, "set xattr %s", name);
    }
  return 0;
}

int
pgd_apply_meta (struct pgd_apply *ap, struct archive_entry *e, const struct pgd_meta_at *at,
                struct pgd_err *err)
{
  mode_t perm = archive_entry_mode (e) & 07777;
  struct timespec ts[2];
  uid_t uid = 0;
  gid_t gid = 0;

  if (host_owner (ap, e, &uid, &gid, err) < 0)
    return -1;
  if (at->fd >= 0 ? fchown (at->fd, uid, gid)
                  : fchownat (at->pfd, at->base, uid, gid, AT_SYMLINK_NOFOLLOW))
    return pgd_error (err, errno, "chown to %u:%u", (unsigned)uid, (unsigned)gid);
  if (set_xattrs (e, at->fd, at->pfd, at->base, err) < 0)
    return -1;
  if (at->symlink)
    ; /* no mode on symlinks (nor on hardlinks of one) */
  else if (at->fd >= 0 ? fchmod (at->fd, perm) : fchmodat (at->pfd, at->base, perm, 0))
    return pgd_error (err, errno, "chmod to %04o", (unsigned)perm);
  if (at->dir || at->no_times)
    return 0; /* directory times come last */
  pgd_apply_entry_times (e, ts);
  if (at->fd >= 0 ? futimens (at->fd, ts) : utimensat (at->pfd, at->base, ts, AT_SYMLINK_NOFOLLOW))
    return pgd_error (err, errno, "set times");
  return 0;
}

/* Copy the data of the current entry into FD, exactly SIZE bytes. */
int
pgd_apply_data (struct pgd_apply *ap, int fd, int64_t size, struct pgd_err *err)
{
  int64_t end = 0;

  for (;;)
    {
      const void *buf;
      size_t len;
      la_int64_t off;
      int r = archive_read_data_block (ap->a, &buf, &len, &off);

      if (r == ARCHIVE_EOF)
        break;
      if (!pgd_la_ok (r))
        return pgd_apply_fail (ap, "read data", err);
      for (size_t done = 0; done < len;)
        {
          ssize_t n = pwrite (fd, (const char *)buf + done, len - done, off + done);
          if (n < 0 && errno == EINTR)
            continue;
          if (n < 0)
            return pgd_error (err, errno, "write");
          done += n;
        }
      if (off + (int64_t)len > end)
        end = off + len;
    }
  if (end != size && ftruncate (fd, size) < 0)
    return pgd_error (err, errno, "truncate to %lld bytes", (long long)size);
  return 0;
}
