/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Two directory trees walked side by side through descriptors. Each directory's
   names are read whole and sorted; the merge of the two sorted lists yields Add,
   Delete and "present in both". A directory that holds changes but is not itself
   changed stays pending on the frame stack until its first changed descendant,
   then is reported as Modify just before it. */
#include "tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "beneath.h"
#include "diff.h"
#include "keymap.h"
#include "util.h"

#define CAP_XATTR "security.capability"
/* Large enough for any vfs_cap_data revision (v3 is 24 bytes). */
#define CAP_BUF 128

struct walk
{
  bool fast;                        /* (inode, ctime) equality proves "unchanged" */
  bool proc;                        /* /proc/self/fd paths work */
  const struct pgd_diff_hint *hint; /* the change tracker's (NULL: compare all) */
  pgd_tree_fn fn;
  void *opaque;
  struct pgd_tree_stats *stats;
  char *path; /* current absolute path, "" for the root */
  size_t len;
  size_t cap;
};

/* One directory of NEW on the way down from the root. */
struct frame
{
  struct frame *up;
  int pdirfd;       /* NEW directory holding it; -1 for the root */
  const char *name; /* its name there */
  struct stat st;
  size_t pathlen;
  bool emitted; /* already reported (or the root, which never is) */
  bool listed;  /* only its entries named in the hint's visit set may differ */
};

/* The sorted names of one directory, stored in a single buffer. */
struct names
{
  char *buf;
  size_t used;
  size_t bufcap;
  char **v;
  size_t n;
};

static void
names_free (struct names *ns)
{
  free (ns->buf);
  free (ns->v);
}

static int
cmp_names (const void *a, const void *b)
{
  return strcmp (*(char *const *)a, *(char *const *)b);
}

static int
names_push (struct names *ns, const char *name, struct pgd_err *err)
{
  size_t len = strlen (name) + 1;

  if (ns->used + len > ns->bufcap)
    {
      size_t cap = ns->bufcap ? ns->bufcap * 2 : 4096;
      while (cap < ns->used + len)
        cap *= 2;
      char *b = realloc (ns->buf, cap);
      if (b == NULL)
        return pgd_error (err, ENOMEM, "read directory");
      ns->buf = b;
      ns->bufcap = cap;
    }
  memcpy (ns->buf + ns->used, name, len);
  ns->used += len;
  ns->n++;
  return 0;
}

/* Read the names of directory FD (SHOWN in errors), sorted bytewise; at the root,
   lost+found is left out. */
static int
read_names (int fd, const char *shown, bool root, struct names *ns, struct pgd_err *err)
{
  cleanup_dir DIR *d = pgd_opendir_dup (fd, shown, err);
  char *p;

  if (d == NULL)
    return -1;
  for (;;)
    {
      struct dirent *de;
      int r = pgd_readdir (d, &de, shown, err);
      if (r < 0)
        return -1;
      if (r == 0)
        break;
      if (root && strcmp (de->d_name, "lost+found") == 0)
        continue;
      if (names_push (ns, de->d_name, err) < 0)
        return -1;
    }
  ns->v = malloc ((ns->n ? ns->n : 1) * sizeof *ns->v);
  if (ns->v == NULL)
    return pgd_error (err, ENOMEM, "read directory %s", shown);
  p = ns->buf;
  for (size_t i = 0; i < ns->n; i++)
    {
      ns->v[i] = p;
      p += strlen (p) + 1;
    }
  qsort (ns->v, ns->n, sizeof *ns->v, cmp_names);
  return 0;
}

static const char *
shown_path (struct walk *w)
{
  return w->len ? w->path : "/";
}

static int
path_push (struct walk *w, const char *name, struct pgd_err *err)
{
  size_t len = strlen (name);

  /* dockerd's own diff reaches every path by its name: none is longer than PATH_MAX.
     The bound also bounds the walk's recursion (a frame per directory, at most
     PATH_MAX / 2 deep), which runs on a request thread's stack: a container that
     nests directories deeper must get an error, not overflow it. */
  if (w->len + 1 + len >= PATH_MAX)
    return pgd_error (err, ENAMETOOLONG, "%.64s...: a path longer than %d bytes", w->path,
                      PATH_MAX - 1);
  if (w->len + len + 2 > w->cap)
    {
      size_t cap = w->cap * 2;
      while (cap < w->len + len + 2)
        cap *= 2;
      char *p = realloc (w->path, cap);
      if (p == NULL)
        return pgd_error (err, ENOMEM, "path %s/%s", w->path, name);
      w->path = p;
      w->cap = cap;
    }
  w->path[w->len++] = '/';
  memcpy (w->path + w->len, name, len + 1);
  w->len += len;
  return 0;
}

static void
path_pop (struct walk *w, size_t len)
{
  w->len = len;
  w->path[len] = '\0';
}

/* Report the pending directories above and including FR, outermost first. */
static int
flush (struct walk *w, struct frame *fr, struct pgd_err *err)
{
  struct pgd_tree_change c;
  char saved;
  int r;

  if (fr == NULL || fr->emitted)
    return 0;
  if (flush (w, fr->up, err) < 0)
    return -1;
  saved = w->path[fr->pathlen];
  w->path[fr->pathlen] = '\0';
  c = (struct pgd_tree_change){ PGD_CHANGE_MODIFY, w->path, fr->pdirfd, fr->name, &fr->st };
  r = w->fn (w->opaque, &c, err);
  w->path[fr->pathlen] = saved;
  fr->emitted = true;
  return r < 0 ? -1 : 0;
}

static int
emit (struct walk *w, struct frame *fr, enum pgd_change_kind kind, int dirfd, const char *name,
      const struct stat *st, struct pgd_err *err)
{
  struct pgd_tree_change c = { kind, w->path, dirfd, name, st };

  if (flush (w, fr, err) < 0)
    return -1;
  return w->fn (w->opaque, &c, err) < 0 ? -1 : 0;
}

/* Length of the capability xattr of regular file NAME in DIRFD, -1 when absent. */
static ssize_t
read_cap (struct walk *w, int dirfd, const char *name, char *buf, struct pgd_err *err)
{
  char proc[PATH_MAX];
  ssize_t n;

  if (w->proc && pgd_fd_path (proc, sizeof proc, dirfd, name) != NULL)
    n = lgetxattr (proc, CAP_XATTR, buf, CAP_BUF);
  else
    {
      cleanup_close int fd
          = openat (dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
      if (fd < 0)
        return pgd_error (err, errno, "open %s", name), -2;
      n = fgetxattr (fd, CAP_XATTR, buf, CAP_BUF);
    }
  if (n >= 0)
    return n;
  if (errno == ENODATA || errno == ENOTSUP)
    return -1;
  return pgd_error (err, errno, "read %s of %s", CAP_XATTR, name), -2;
}

static bool
same_mtime (const struct stat *a, const struct stat *b)
{
  if (a->st_mtim.tv_sec != b->st_mtim.tv_sec)
    return false;
  return a->st_mtim.tv_nsec == b->st_mtim.tv_nsec || a->st_mtim.tv_nsec == 0
         || b->st_mtim.tv_nsec == 0;
}

/* Docker's rule: does NAME differ between NEWFD (stat NS) and OLDFD (stat OS)?
   Returns 1 or 0, -1 on error. Never reads file contents. */
static int
differs (struct walk *w, int newfd, int oldfd, const char *name, const struct stat *ns,
         const struct stat *os, struct pgd_err *err)
{
  if (ns->st_mode != os->st_mode || ns->st_uid != os->st_uid || ns->st_gid != os->st_gid
      || ns->st_rdev != os->st_rdev)
    return 1;
  if (!S_ISDIR (os->st_mode) && (!same_mtime (ns, os) || ns->st_size != os->st_size))
    return 1;
  if (S_ISLNK (ns->st_mode))
    {
      char a[PATH_MAX], b[PATH_MAX];
      ssize_t la = readlinkat (newfd, name, a, sizeof a);
      ssize_t lb = readlinkat (oldfd, name, b, sizeof b);
      if (la < 0 || lb < 0)
        return pgd_error (err, errno, "readlink %s", shown_path (w));
      return la != lb || memcmp (a, b, la) != 0;
    }
  if (S_ISREG (ns->st_mode))
    {
      char a[CAP_BUF], b[CAP_BUF];
      ssize_t la = read_cap (w, newfd, name, a, err);
      ssize_t lb = la < -1 ? -2 : read_cap (w, oldfd, name, b, err);
      if (la < -1 || lb < -1)
        return pgd_error_wrap (err, "compare %s", shown_path (w));
      return la != lb || (la > 0 && memcmp (a, b, la) != 0);
    }
  return 0;
}

/* A path present on both sides whose inode is untouched since the clone. */
static bool
untouched (const struct walk *w, const struct stat *ns, const struct stat *os)
{
  if (!w->fast || S_ISDIR (ns->st_mode) || S_ISDIR (os->st_mode))
    return false;
  if (ns->st_ino != os->st_ino || ns->st_ctim.tv_sec != os->st_ctim.tv_sec
      || ns->st_ctim.tv_nsec != os->st_ctim.tv_nsec)
    return false;
  /* on one device the inode is the same object; across clones a zero nanosecond
     field may be a filesystem without fine timestamps, where reuse could collide */
  return ns->st_dev == os->st_dev || ns->st_ctim.tv_nsec != 0;
}

static bool
hinted (const struct pgd_keymap *set, const struct walk *w)
{
  return pgd_keymap_get (set, w->path, w->len, NULL);
}

static int walk_dir (struct walk *w, struct frame *fr, int newfd, int oldfd, struct pgd_err *err);

/* Descend into directory NAME of NEWFD (and of OLDFD when it is a directory there too). */
static int
descend (struct walk *w, struct frame *fr, int newfd, int oldfd, const char *name,
         const struct stat *st, bool emitted, bool listed, struct pgd_err *err)
{
  struct frame sub = { fr, newfd, name, *st, w->len, emitted, listed };
  cleanup_close int nfd = openat (newfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  cleanup_close int ofd = -1;

  if (nfd < 0)
    return pgd_error (err, errno, "open %s", w->path);
  if (oldfd >= 0)
    {
      ofd = openat (oldfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (ofd < 0)
        return pgd_error (err, errno, "open parent's %s", w->path);
    }
  return walk_dir (w, &sub, nfd, ofd, err);
}

/* NAME exists only in NEW. */
static int
added (struct walk *w, struct frame *fr, int newfd, const char *name, const struct stat *st,
       struct pgd_err *err)
{
  if (emit (w, fr, PGD_CHANGE_ADD, newfd, name, st, err) < 0)
    return -1;
  if (!S_ISDIR (st->st_mode))
    return 0;
  return descend (w, fr, newfd, -1, name, st, true, false, err);
}

/* NAME exists on both sides. */
static int
compared (struct walk *w, struct frame *fr, int newfd, int oldfd, const char *name,
          const struct stat *ns, const struct stat *os, struct pgd_err *err)
{
  int d;

  if (w->stats)
    w->stats->compared++;
  if (untouched (w, ns, os))
    {
      if (w->stats)
        w->stats->fast++;
      return 0;
    }
  d = differs (w, newfd, oldfd, name, ns, os, err);
  if (d < 0)
    return -1;
  if (d && emit (w, fr, PGD_CHANGE_MODIFY, newfd, name, ns, err) < 0)
    return -1;
  if (!S_ISDIR (ns->st_mode))
    return 0;
  /* the same directory on both sides (one lineage keeps inode numbers): the hint says
     whether anything beneath it changed, and whether its own entries did */
  bool same = w->hint && S_ISDIR (os->st_mode) && ns->st_ino == os->st_ino;
  if (same && !hinted (&w->hint->visit, w))
    {
      if (w->stats)
        w->stats->pruned++;
      return 0;
    }
  bool listed = same && !hinted (&w->hint->full, w);
  return descend (w, fr, newfd, S_ISDIR (os->st_mode) ? oldfd : -1, name, ns, d, listed, err);
}

/* lstat NAME in FD; 1 when present, 0 when it vanished meanwhile, -1 on error. */
static int
stat_at (struct walk *w, int fd, const char *name, struct stat *st, struct pgd_err *err)
{
  if (fstatat (fd, name, st, AT_SYMLINK_NOFOLLOW) == 0)
    return 1;
  if (errno == ENOENT)
    return 0;
  return pgd_error (err, errno, "stat %s", w->path);
}

static int
walk_entry (struct walk *w, struct frame *fr, int newfd, int oldfd, const char *name, bool in_new,
            bool in_old, struct pgd_err *err)
{
  struct stat ns, os;
  int hn = 0, ho = 0;

  if (in_new && (hn = stat_at (w, newfd, name, &ns, err)) < 0)
    return -1;
  if (in_old && (ho = stat_at (w, oldfd, name, &os, err)) < 0)
    return -1;
  if (hn && ho)
    return compared (w, fr, newfd, oldfd, name, &ns, &os, err);
  if (hn)
    return added (w, fr, newfd, name, &ns, err);
  if (ho)
    return emit (w, fr, PGD_CHANGE_DELETE, -1, name, NULL, err);
  return 0;
}

static int
walk_dir (struct walk *w, struct frame *fr, int newfd, int oldfd, struct pgd_err *err)
{
  struct names nn = { 0 }, on = { 0 };
  size_t i = 0, j = 0, base = w->len;
  bool root = fr->up == NULL;
  int r = 0;

  if (read_names (newfd, shown_path (w), root, &nn, err) < 0
      || (oldfd >= 0 && read_names (oldfd, shown_path (w), root, &on, err) < 0))
    {
      names_free (&nn);
      names_free (&on);
      return -1;
    }
  while (r == 0 && (i < nn.n || j < on.n))
    {
      int c = i >= nn.n ? 1 : j >= on.n ? -1 : strcmp (nn.v[i], on.v[j]);
      const char *name = c <= 0 ? nn.v[i] : on.v[j];

      r = path_push (w, name, err);
      if (r == 0 && (!fr->listed || hinted (&w->hint->visit, w)))
        r = walk_entry (w, fr, newfd, oldfd, name, c <= 0, c >= 0, err);
      path_pop (w, base);
      i += c <= 0;
      j += c >= 0;
    }
  names_free (&nn);
  names_free (&on);
  return r;
}

/* Clones of one ext4 share its UUID, which ext4 reports as the statfs fsid. */
static bool
same_lineage (int newfd, int oldfd)
{
  struct stat a, b;
  struct statfs fa, fb;
  static const fsid_t zero;

  if (fstat (newfd, &a) < 0 || fstat (oldfd, &b) < 0)
    return false;
  if (a.st_dev == b.st_dev)
    return true;
  if (fstatfs (newfd, &fa) < 0 || fstatfs (oldfd, &fb) < 0)
    return false;
  return fa.f_type == fb.f_type && memcmp (&fa.f_fsid, &fb.f_fsid, sizeof fa.f_fsid) == 0
         && memcmp (&fa.f_fsid, &zero, sizeof zero) != 0;
}

int
pgd_tree_walk (const char *new_root, const char *old_root, unsigned flags, pgd_tree_fn fn,
               void *opaque, struct pgd_tree_stats *stats, struct pgd_err *err)
{
  return pgd_tree_walk_hint (new_root, old_root, NULL, flags, fn, opaque, stats, err);
}

int
pgd_tree_walk_hint (const char *new_root, const char *old_root, const struct pgd_diff_hint *hint,
                    unsigned flags, pgd_tree_fn fn, void *opaque, struct pgd_tree_stats *stats,
                    struct pgd_err *err)
{
  struct walk w = { .fn = fn, .opaque = opaque, .stats = stats };
  struct frame root = { .pdirfd = -1, .name = "", .emitted = true };
  cleanup_close int nfd = open (new_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  cleanup_close int ofd = -1;
  cleanup_free char *path = NULL;

  if (nfd < 0)
    return pgd_error (err, errno, "open %s", new_root);
  if (old_root != NULL && (ofd = open (old_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
    return pgd_error (err, errno, "open %s", old_root);
  w.fast = ofd >= 0 && !(flags & PGD_TREE_NO_FASTPATH) && same_lineage (nfd, ofd);
  w.proc = access ("/proc/self/fd", X_OK) == 0;
  /* the hint speaks of inodes of one lineage: without the clone relation, walk all */
  w.hint = w.fast ? hint : NULL;
  root.listed = w.hint && !pgd_keymap_get (&w.hint->full, "", 0, NULL);
  if (stats)
    *stats = (struct pgd_tree_stats){ .fastpath = w.fast };
  w.cap = 256;
  w.path = path = calloc (w.cap, 1);
  if (path == NULL)
    return pgd_error (err, ENOMEM, "walk %s", new_root);
  if (fstat (nfd, &root.st) < 0)
    return pgd_error (err, errno, "stat %s", new_root);
  int r = walk_dir (&w, &root, nfd, ofd, err);
  path = w.path; /* path_push may have moved it */
  return r;
}
