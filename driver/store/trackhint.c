/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The change tracker's hint: the recorded directory handles opened on the layer's mount,
   turned into today's paths, with their ancestors, as the set of directories the
   comparison walk must visit. A changed file with other hard links elsewhere, or a
   handle that no longer leads to its path, sends the caller to the full walk. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "log.h"
#include "track_priv.h"

#define CAP_XATTR "security.capability"

/* The path of FD as the kernel names it. */
static int
fd_path (int fd, char *buf, size_t len)
{
  char proc[64];
  ssize_t n;

  snprintf (proc, sizeof proc, "/proc/self/fd/%d", fd);
  n = readlink (proc, buf, len - 1);
  if (n < 0 || (size_t)n >= len - 1)
    return -1;
  buf[n] = '\0';
  return 0;
}

/* Add PATH ("" = root, "/a/b") and every ancestor to VISIT. */
static int
visit_add (struct pgd_keymap *visit, char *path, struct pgd_err *err)
{
  size_t len = strlen (path);

  while (len > 0)
    {
      bool added;
      if (pgd_keymap_put (visit, path, len, NULL, &added, err) < 0)
        return -1;
      if (!added)
        return 0;
      while (len > 0 && path[len - 1] != '/')
        len--;
      len--; /* the '/' */
    }
  return 0;
}

/* The capability xattr of an O_PATH FD (length, -1 when none). */
static ssize_t
cap_of (int fd, char *buf, size_t len)
{
  char proc[64];
  ssize_t n;

  snprintf (proc, sizeof proc, "/proc/self/fd/%d", fd);
  n = getxattr (proc, CAP_XATTR, buf, len);
  return n < 0 ? -1 : n;
}

/* File NAME of DIRFD has other links: 0 when its inode is unchanged since the parent
   (as far as Changes can tell) or new, 1 when it changed. */
static int
link_changed (int dirfd, const char *name, const struct stat *ns, int oldroot)
{
  struct
  {
    struct file_handle fh;
    unsigned char buf[MAX_HANDLE_SZ];
  } h;
  struct stat os;
  int mnt;

  h.fh.handle_bytes = MAX_HANDLE_SZ;
  if (name_to_handle_at (dirfd, name, &h.fh, &mnt, 0) < 0)
    return 1;
  cleanup_close int ofd = open_by_handle_at (oldroot, &h.fh, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (ofd < 0)
    return errno == ESTALE || errno == ENOENT ? 0 : 1; /* a new inode: all its names are new */
  if (fstat (ofd, &os) < 0)
    return 1;
  if (ns->st_mode != os.st_mode || ns->st_uid != os.st_uid || ns->st_gid != os.st_gid
      || ns->st_rdev != os.st_rdev || ns->st_size != os.st_size
      || ns->st_mtim.tv_sec != os.st_mtim.tv_sec || ns->st_mtim.tv_nsec != os.st_mtim.tv_nsec)
    return 1;
  if (!S_ISREG (ns->st_mode))
    return 0;
  char a[128], b[128];
  cleanup_close int nfd = openat (dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (nfd < 0)
    return 1;
  ssize_t la = cap_of (nfd, a, sizeof a), lb = cap_of (ofd, b, sizeof b);
  return la != lb || (la > 0 && memcmp (a, b, la) != 0);
}

/* Does directory DIRFD hold a file with other links that changed? SEEN holds the
   inodes already found unchanged (busybox's 400 names of one file are checked once). */
static int
dir_links_changed (int dirfd, const char *shown, int oldroot, struct pgd_keymap *seen,
                   struct pgd_err *err)
{
  cleanup_dir DIR *d = pgd_opendir_dup (dirfd, shown, err);
  struct dirent *de;
  int r;

  if (d == NULL)
    return -1;
  while ((r = pgd_readdir (d, &de, shown, err)) > 0)
    {
      struct stat st;
      if (de->d_type == DT_DIR)
        continue;
      if (fstatat (dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR (st.st_mode)
          || st.st_nlink < 2)
        continue;
      uint64_t key[2] = { st.st_dev, st.st_ino };
      if (pgd_keymap_get (seen, key, sizeof key, NULL))
        continue;
      if (link_changed (dirfd, de->d_name, &st, oldroot))
        return 1;
      if (pgd_keymap_put (seen, key, sizeof key, NULL, NULL, err) < 0)
        return -1;
    }
  return r < 0 ? -1 : 0;
}

/* Resolve entry E on the mount ROOT (kernel path PREFIX) into VISIT. Returns 0, 1 when
   the hint cannot be used (*WHY says), -1 on error. */
static int
resolve (const struct track_ent *e, int root, const char *prefix, int oldroot,
         struct pgd_diff_hint *hint, struct pgd_keymap *seen, const char **why, struct pgd_err *err)
{
  struct
  {
    struct file_handle fh;
    unsigned char buf[256];
  } h;
  const char *name = (const char *)e->data + e->hlen;
  char path[PATH_MAX + 256];
  size_t plen = strlen (prefix);
  struct stat a, b;

  h.fh.handle_bytes = e->hlen;
  h.fh.handle_type = e->type;
  memcpy (h.fh.f_handle, e->data, e->hlen);
  cleanup_close int fd = open_by_handle_at (root, &h.fh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    {
      if (errno == ESTALE || errno == ENOENT)
        return 0; /* removed since: its parent's entry covers it */
      return *why = "a recorded directory could not be opened", 1;
    }
  if (fstat (fd, &a) < 0)
    return pgd_error (err, errno, "stat a recorded directory");
  if (a.st_nlink == 0)
    return 0;
  if (fd_path (fd, path, PATH_MAX) < 0 || strncmp (path, prefix, plen) != 0
      || (path[plen] != '/' && path[plen] != '\0'))
    return *why = "a recorded directory is outside the layer's mount", 1;
  const char *rel = path + plen;
  /* the name the kernel gives must lead back to the same directory */
  if (fstatat (root, rel[0] ? rel + 1 : ".", &b, AT_SYMLINK_NOFOLLOW) < 0 || a.st_ino != b.st_ino
      || a.st_dev != b.st_dev)
    return *why = "a recorded directory does not resolve to its path", 1;
  if (name[0] == '\0')
    {
      int c = dir_links_changed (fd, path, oldroot, seen, err);
      if (c < 0)
        return -1;
      if (c > 0)
        return *why = "a changed file has hard links in other directories", 1;
    }
  char key[PATH_MAX + 256];
  snprintf (key, sizeof key, "%s%s%s", rel, name[0] ? "/" : "", name);
  if (pgd_keymap_put (&hint->full, key, strlen (key), NULL, NULL, err) < 0)
    return -1;
  return visit_add (&hint->visit, key, err);
}

int
pgd_track_hint (struct pgd_tracker *t, const char *id, const char *parent, const char *new_root,
                const char *old_root, struct pgd_diff_hint *hint, bool *use, struct pgd_err *err)
{
  struct track_rec *r;
  const char *why = NULL;
  char prefix[PATH_MAX];
  int ret = 0;

  *use = false;
  if (t == NULL)
    {
      pgd_log (PGD_LOG_DEBUG, "changes of %s: full comparison (no change tracker)", id);
      return 0;
    }
  pthread_mutex_lock (&t->lock);
  r = pgd_track_find (t, id);
  if (r == NULL)
    {
      pthread_mutex_unlock (&t->lock);
      pgd_log (PGD_LOG_DEBUG, "changes of %s: full comparison (layer not tracked by this process)",
               id);
      return 0;
    }
  pthread_mutex_lock (&r->lock);
  pthread_mutex_unlock (&t->lock);
  pgd_track_drain (t, r);
  char why_buf[sizeof r->why];
  if (!r->trusted)
    why = strcpy (why_buf, r->why); /* R may be freed once unlocked */
  else if (parent == NULL || old_root == NULL || strcmp (parent, r->parent) != 0)
    why = "asked against another layer than its clone parent";
  if (why == NULL)
    {
      cleanup_close int root = open (new_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      cleanup_close int oldroot = open (old_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (root < 0 || oldroot < 0)
        ret = pgd_error (err, errno, "open %s", root < 0 ? new_root : old_root);
      else if (fd_path (root, prefix, sizeof prefix) < 0)
        why = "the mount has no path";
      else
        {
          if (strcmp (prefix, "/") == 0)
            prefix[0] = '\0';
          struct pgd_keymap seen = { 0 };
          for (size_t i = 0; ret == 0 && why == NULL && i < r->n; i++)
            ret = resolve (r->ents[i], root, prefix, oldroot, hint, &seen, &why, err);
          pgd_keymap_free (&seen);
          if (ret > 0)
            ret = 0;
        }
    }
  size_t n = r->n;
  pthread_mutex_unlock (&r->lock);
  if (ret < 0)
    return -1;
  if (why)
    {
      pgd_diff_hint_free (hint);
      pgd_log (PGD_LOG_DEBUG, "changes of %s: full comparison (%s)", id, why);
      return 0;
    }
  pgd_log (PGD_LOG_DEBUG,
           "changes of %s: tracked, %zu entries, %zu directories to visit, %zu in full", id, n,
           hint->visit.n, hint->full.n);
  *use = true;
  return 0;
}
