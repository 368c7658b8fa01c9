/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Everything here works on descriptors: a path is never handed to the kernel whole
   unless openat2 is told to refuse symlinks and stay beneath the root. */
#include "beneath.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util.h"

/* Mode of the parent directories an archive does not list (dockerd uses 0600). */
#define PGD_IMPLICIT_DIR_MODE 0600

int
pgd_path_clean (const char *in, char *out, size_t size)
{
  size_t len = 0;

  if (size == 0)
    return errno = ENAMETOOLONG, -1;
  while (*in)
    {
      const char *comp = in;
      size_t clen;

      while (*in && *in != '/')
        in++;
      clen = in - comp;
      while (*in == '/')
        in++;
      if (clen == 0 || (clen == 1 && comp[0] == '.'))
        continue;
      if (clen == 2 && comp[0] == '.' && comp[1] == '.')
        {
          if (len == 0)
            return errno = ERANGE, -1;
          while (len > 0 && out[len - 1] != '/')
            len--;
          if (len > 0)
            len--;
          continue;
        }
      if (len + (len > 0) + clen + 1 > size)
        return errno = ENAMETOOLONG, -1;
      if (len > 0)
        out[len++] = '/';
      memcpy (out + len, comp, clen);
      len += clen;
    }
  out[len] = '\0';
  return 0;
}

static int
openat2_beneath (int rootfd, const char *rel)
{
  struct open_how how = {
    .flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
  };

  return (int)syscall (SYS_openat2, rootfd, rel, &how, sizeof how);
}

/* One component at a time: O_NOFOLLOW|O_DIRECTORY refuses symlinks and files. */
static int
open_walk (int rootfd, const char *rel, bool create, int *out, struct pgd_err *err)
{
  cleanup_close int cur = dup (rootfd);
  char comp[NAME_MAX + 1];

  if (cur < 0)
    return pgd_error (err, errno, "dup");
  while (*rel)
    {
      const char *end = strchrnul (rel, '/');
      size_t len = end - rel;
      int next;

      if (len > NAME_MAX)
        return pgd_error (err, ENAMETOOLONG, "open directory %.*s", (int)len, rel);
      memcpy (comp, rel, len);
      comp[len] = '\0';
      next = openat (cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (next < 0 && errno == ENOENT && create)
        {
          if (mkdirat (cur, comp, PGD_IMPLICIT_DIR_MODE) < 0 && errno != EEXIST)
            return pgd_error (err, errno, "create directory %s", comp);
          next = openat (cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
      if (next < 0)
        {
          int e = errno;
          struct stat st;
          if (fstatat (cur, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK (st.st_mode))
            return pgd_error (err, ELOOP, "open directory %s: %s is a symlink", rel, comp);
          if (e == ENOTDIR || e == ELOOP)
            return pgd_error (err, ENOTDIR, "open directory %s: %s is not a directory", rel, comp);
          return pgd_error (err, e, "open directory %s", comp);
        }
      close (cur);
      cur = next;
      rel = *end ? end + 1 : end;
    }
  *out = cur;
  cur = -1;
  return 0;
}

int
pgd_open_dir_beneath (int rootfd, const char *rel, bool create, int *fd, struct pgd_err *err)
{
  int r;

  if (*rel == '\0')
    {
      *fd = fcntl (rootfd, F_DUPFD_CLOEXEC, 0);
      return *fd < 0 ? pgd_error (err, errno, "dup") : 0;
    }
  r = openat2_beneath (rootfd, rel);
  if (r >= 0)
    {
      *fd = r;
      return 0;
    }
  if (errno == EXDEV)
    return pgd_error (err, EXDEV, "open directory %s: leaves the root", rel);
  if (errno != ENOENT && errno != ENOSYS && errno != EAGAIN && errno != ELOOP && errno != ENOTDIR)
    return pgd_error (err, errno, "open directory %s", rel);
  /* components to create, no openat2, or a refusal to explain: walk step by step */
  if (open_walk (rootfd, rel, create, fd, err) < 0)
    return -1;
  return 0;
}

static int
remove_children (int fd, const char *shown, dev_t dev, struct pgd_err *err)
{
  cleanup_dir DIR *d = pgd_opendir_dup (fd, shown, err);
  struct dirent *de;

  if (d == NULL)
    return -1;
  for (;;)
    {
      struct stat st;
      int r = pgd_readdir (d, &de, shown, err);
      if (r < 0)
        return -1;
      if (r == 0)
        break;
      if (fstatat (fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        {
          if (errno == ENOENT)
            continue;
          return pgd_error (err, errno, "stat %s/%s", shown, de->d_name);
        }
      if (!S_ISDIR (st.st_mode))
        {
          if (unlinkat (fd, de->d_name, 0) < 0 && errno != ENOENT)
            return pgd_error (err, errno, "unlink %s/%s", shown, de->d_name);
          continue;
        }
      if (st.st_dev != dev)
        return pgd_error (err, EBUSY, "remove %s/%s: a mount is inside", shown, de->d_name);
      cleanup_close int sub
          = openat (fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0)
        return pgd_error (err, errno, "open %s/%s", shown, de->d_name);
      if (remove_children (sub, de->d_name, dev, err) < 0)
        return pgd_error_wrap (err, "remove %s", shown);
      if (unlinkat (fd, de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return pgd_error (err, errno, "rmdir %s/%s", shown, de->d_name);
    }
  return 0;
}

int
pgd_remove_at (int dirfd, const char *name, const char *shown, struct pgd_err *err)
{
  struct stat st, parent;

  if (fstatat (dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return errno == ENOENT ? 0 : pgd_error (err, errno, "stat %s", shown);
  if (!S_ISDIR (st.st_mode))
    {
      if (unlinkat (dirfd, name, 0) < 0 && errno != ENOENT)
        return pgd_error (err, errno, "unlink %s", shown);
      return 0;
    }
  if (fstat (dirfd, &parent) < 0)
    return pgd_error (err, errno, "stat parent of %s", shown);
  if (st.st_dev != parent.st_dev)
    return pgd_error (err, EBUSY, "remove %s: it is a mount point", shown);
  cleanup_close int fd = openat (dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return pgd_error (err, errno, "open %s", shown);
  if (remove_children (fd, shown, st.st_dev, err) < 0)
    return -1;
  if (unlinkat (dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
    return pgd_error (err, errno, "rmdir %s", shown);
  return 0;
}

char *
pgd_fd_path (char *buf, size_t size, int dirfd, const char *name)
{
  int n = snprintf (buf, size, "/proc/self/fd/%d/%s", dirfd, name);

  return n < 0 || (size_t)n >= size ? NULL : buf;
}
