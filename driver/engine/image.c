/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ploop images on disk through libploop 1.15, offline: none of these calls needs
   the ploop kernel module. Facts and pitfalls: PLOOP.md §4, §5, §8 (team docs). */
#include "image.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ploop/libploop.h>
#include <ploop/ploop_if.h>

#include <ploop/ploop1_image.h> /* after ploop_if.h: uses PLOOP_FMT_V1 */

#include "delta.h"
#include "image_priv.h"
#include "log.h"
#include "util.h"

/* Exported by libploop 1.15 but not declared in its header (PLOOP.md §5.1). */
int ploop_check (char *img, int flags, __u32 *blocksize);
int ploop_grow_image (struct ploop_disk_images_data *di, off_t sectors);

/* ---- small file helpers ----------------------------------------------------- */

static int
fsync_path (const char *path, struct pgd_err *err)
{
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    return pgd_error (err, errno, "open %s", path);
  if (fsync (fd) < 0)
    return pgd_error (err, errno, "fsync %s", path);
  return 0;
}

/* DIR must exist and hold nothing. */
static int
check_empty_dir (const char *dir, struct pgd_err *err)
{
  cleanup_dir DIR *d = opendir (dir);
  struct dirent *de;

  if (d == NULL)
    return pgd_error (err, errno, "open directory %s", dir);
  errno = 0;
  while ((de = readdir (d)) != NULL)
    if (strcmp (de->d_name, ".") != 0 && strcmp (de->d_name, "..") != 0)
      return pgd_error (err, ENOTEMPTY, "directory %s holds %s", dir, de->d_name);
  if (errno != 0)
    return pgd_error (err, errno, "read directory %s", dir);
  return 0;
}

/* Roll back a failed create/clone: unlink every file of DIR, which was empty
   when we started (the links we made, libploop's DD, .tmp, .lck, new delta). */
static void
empty_dir (const char *dir)
{
  cleanup_dir DIR *d = opendir (dir);
  struct dirent *de;

  if (d == NULL)
    return;
  while ((de = readdir (d)) != NULL)
    if (strcmp (de->d_name, ".") != 0 && strcmp (de->d_name, "..") != 0)
      unlinkat (dirfd (d), de->d_name, 0);
}

static uint64_t
round_up (uint64_t v, uint64_t align)
{
  return (v + align - 1) / align * align;
}

/* ---- create ----------------------------------------------------------------- */

static int
do_create (const char *dir, uint64_t size, uint32_t cluster, struct pgd_err *err)
{
  char image[LPATH], dd[LPATH];
  int rc;

  if (cluster < MIN_CLUSTER || cluster > MAX_CLUSTER || (cluster & (cluster - 1)) != 0)
    return pgd_error (err, EINVAL, "cluster size %u: not a power of two from 32 KiB to 64 MiB",
                      cluster);
  if (size == 0 || size > V1_MAX_SECTORS * SECTOR_BYTES)
    return pgd_error (err, EINVAL, "size %llu: not between 1 byte and 2 TiB (ploop v1)",
                      (unsigned long long)size);
  size = round_up (size, cluster);
  if (size / SECTOR_BYTES > V1_MAX_SECTORS)
    return pgd_error (err, EINVAL, "size %llu: rounded to the cluster, over 2 TiB (ploop v1)",
                      (unsigned long long)size);
  if (check_empty_dir (dir, err) < 0)
    return -1;
  char abs[PATH_MAX];
  if (realpath (dir, abs) == NULL)
    return pgd_error (err, errno, "image directory %s", dir);
  if (pgd_lpath (image, err, "%s/%s", abs, PGD_IMAGE_BASE) < 0
      || pgd_lpath (dd, err, "%s/%s", abs, PGD_IMAGE_DD) < 0)
    return -1;

  struct ploop_create_param param = {
    .size = size / SECTOR_BYTES,
    .mode = PLOOP_EXPANDED_MODE,
    .image = image,
    .fstype = NULL,
    .blocksize = cluster / SECTOR_BYTES,
    .fmt_version = PLOOP_FMT_V1, /* 0 would mean v2 on large-disk hosts (pitfall 4) */
  };
  /* our own thin delta, not ploop_create_image's BAT written in full (64 MiB at 1 TiB
     with 64 KiB clusters); libploop only describes it */
  if (pgd_delta_create_thin (image, param.size, param.blocksize, err) < 0)
    {
      empty_dir (dir);
      return -1;
    }
  pgd_image_lib_init ();
  rc = ploop_create_dd (dd, &param);
  if (rc != 0)
    {
      pgd_libploop_error (err, rc, "describe", image);
      empty_dir (dir);
      return -1;
    }
  /* libploop fsyncs the delta and the DD but never the directory (pitfall 20) */
  if (fsync_path (image, err) < 0 || fsync_path (dd, err) < 0 || pgd_fsync_dir (dir, err) < 0)
    {
      empty_dir (dir);
      return -1;
    }
  return 0;
}

int
pgd_image_create (const char *dir, uint64_t size, uint32_t cluster, struct pgd_err *err)
{
  if (do_create (dir, size, cluster, err) < 0)
    return pgd_error_wrap (err, "create image %s", dir);
  return 0;
}

/* ---- clone ------------------------------------------------------------------ */

/* Take the parent's DD lock when nobody holds it, so that no server opens the parent
   while we link its files. *FD stays -1 when someone holds it: a server serving the
   parent read-only is fine; read-write is caught by the in-use flag. */
static int
lock_parent (const char *dir, int *fd, struct pgd_err *err)
{
  char path[PATH_MAX];

  *fd = -1;
  if (snprintf (path, sizeof path, "%s/%s", dir, LOCK_FILE) >= (int)sizeof path)
    return pgd_error (err, ENAMETOOLONG, "%s/%s", dir, LOCK_FILE);
  int lfd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lfd < 0)
    return errno == EROFS ? 0 : pgd_error (err, errno, "open %s", path);
  if (flock (lfd, LOCK_EX | LOCK_NB) < 0)
    {
      int e = errno;
      close (lfd);
      return e == EWOULDBLOCK ? 0 : pgd_error (err, e, "flock %s", path);
    }
  *fd = lfd;
  return 0;
}

/* Parent must be a closed image with room for one more delta. */
static int
check_parent (const struct pgd_dd_chain *c, const char *dir, struct pgd_err *err)
{
  struct pgd_delta_hdr h;

  if (c->di->nimages + 1 > PGD_IMAGE_MAX_DELTAS)
    return pgd_error (err, 0,
                      "parent %s has %d deltas: a clone would exceed libploop's limit of %d", dir,
                      c->di->nimages, PGD_IMAGE_MAX_DELTAS);
  if (pgd_dd_top_is_raw (c))
    return 0;
  if (pgd_delta_read_header (c->files[c->n - 1], &h, err) < 0)
    return -1;
  if (h.in_use != 0)
    return pgd_error (err, EBUSY,
                      "parent's top delta %s is in use (flag 0x%08x): open read-write, or "
                      "not closed cleanly (check it with repair)",
                      c->files[c->n - 1], h.in_use);
  return 0;
}

/* Hard-link every delta of the parent into CHILD (keeping base names) and point the
   in-memory DD at the links. */
static int
link_files (struct pgd_dd_chain *c, const char *child, struct pgd_err *err)
{
  char link_path[PATH_MAX];

  for (int i = 0; i < c->di->nimages; i++)
    {
      const char *file = c->di->images[i]->file;
      const char *base = strrchr (file, '/') ? strrchr (file, '/') + 1 : file;

      if (snprintf (link_path, sizeof link_path, "%s/%s", child, base) >= (int)sizeof link_path)
        return pgd_error (err, ENAMETOOLONG, "%s/%s", child, base);
      if (link (file, link_path) < 0)
        return pgd_error (err, errno, "link %s to %s", file, link_path);
      char *copy = strdup (link_path);
      if (copy == NULL)
        return pgd_error (err, ENOMEM, "%s", link_path);
      free (c->di->images[i]->file);
      c->di->images[i]->file = copy;
    }
  return 0;
}

/* Give the child (DD in memory: C, files linked into CHILD) its private empty top, a
   thin delta of the parent top's size, and store the child's DD. libploop's snapshot
   would write the whole BAT of the new delta; ours writes one page. */
static int
add_thin_top (struct pgd_dd_chain *c, const char *child, const char *child_dd, struct pgd_err *err)
{
  char file[PATH_MAX], guid[GUID_LEN];
  uint64_t sectors = c->di->size;
  uint32_t cluster = c->blocksize;

  if (!pgd_dd_top_is_raw (c))
    {
      struct pgd_delta_hdr h;
      if (pgd_delta_read_header (c->files[c->n - 1], &h, err) < 0)
        return -1;
      sectors = h.size_sectors;
      cluster = h.cluster_sectors;
    }
  const char *first = c->di->images[0]->file;
  const char *base = strrchr (first, '/') ? strrchr (first, '/') + 1 : first;
  if (ploop_uuid_generate (guid, sizeof guid) != 0)
    return pgd_error (err, EIO, "new delta name: uuid");
  if (snprintf (file, sizeof file, "%s/%s.%s", child, base, guid) >= (int)sizeof file)
    return pgd_error (err, ENAMETOOLONG, "%s/%s.%s", child, base, guid);
  if (pgd_delta_create_thin (file, sectors, cluster, err) < 0
      || pgd_image_di_push_top (c->di, file, err) < 0)
    return -1;
  int rc = ploop_store_diskdescriptor (child_dd, c->di);
  if (rc != 0)
    return pgd_libploop_error (err, rc, "store", child_dd);
  return 0;
}

/* The same through libploop's offline snapshot, for a v2 top (our thin deltas are v1):
   the new delta written in full, then thinned. libploop only reads the old (shared)
   top here; with snap_dir the new file lands in CHILD. */
static int
add_libploop_top (struct pgd_dd_chain *c, const char *child, const char *child_dd,
                  struct pgd_err *err)
{
  char snap_dir[LPATH];
  struct ploop_disk_images_data *di = NULL;
  cleanup_chain struct pgd_dd_chain nc = { 0 };
  int rc = ploop_store_diskdescriptor (child_dd, c->di);

  if (rc != 0)
    return pgd_libploop_error (err, rc, "store", child_dd);
  if (pgd_lpath (snap_dir, err, "%s", child) < 0)
    return -1;
  rc = ploop_read_disk_descr (&di, child_dd);
  if (rc != 0)
    {
      if (di)
        ploop_free_diskdescriptor (di);
      return pgd_libploop_error (err, rc, "read", child_dd);
    }
  struct ploop_snapshot_param param = { .snap_dir = snap_dir };
  rc = ploop_create_snapshot (di, &param);
  ploop_free_diskdescriptor (di);
  if (rc != 0)
    return pgd_libploop_error (err, rc, "snapshot", child_dd);
  if (pgd_dd_chain_read (child, &nc, err) < 0)
    return -1;
  return pgd_delta_thin (nc.files[nc.n - 1], err);
}

/* The child's private top: thin and ours for a v1 (or raw) parent, libploop's for v2. */
static int
add_private_top (struct pgd_dd_chain *c, const char *child, const char *child_dd,
                 struct pgd_err *err)
{
  struct pgd_delta_hdr h = { .version = 1 };

  if (!pgd_dd_top_is_raw (c) && pgd_delta_read_header (c->files[c->n - 1], &h, err) < 0)
    return -1;
  if (h.version == 2)
    return add_libploop_top (c, child, child_dd, err);
  return add_thin_top (c, child, child_dd, err);
}

/* The clone must have a private top of its own, and be durable. */
static int
finish_clone (const char *child, const char *child_dd, struct pgd_err *err)
{
  cleanup_chain struct pgd_dd_chain c = { 0 };
  struct stat st;

  if (pgd_dd_chain_read (child, &c, err) < 0)
    return -1;
  const char *top = c.files[c.n - 1];
  if (stat (top, &st) < 0)
    return pgd_error (err, errno, "stat %s", top);
  if (st.st_nlink != 1)
    return pgd_error (err, 0, "new top delta %s is not private (%lu links)", top,
                      (unsigned long)st.st_nlink);
  /* The fresh top is thin (its BAT a hole): `ploop check -f -c -r` calls it sparse
     (rc 11), pgd_image_check accepts it, pgd_image_allocate fills it (README). */
  if (fsync_path (top, err) < 0 || fsync_path (child_dd, err) < 0)
    return -1;
  return pgd_fsync_dir (child, err);
}

static int
do_clone (const char *parent_dir, const char *child_dir, struct pgd_err *err)
{
  char parent[PATH_MAX], child[PATH_MAX], child_dd[LPATH];
  cleanup_close int lock_fd = -1;
  cleanup_chain struct pgd_dd_chain c = { 0 };

  if (realpath (parent_dir, parent) == NULL)
    return pgd_error (err, errno, "parent image %s", parent_dir);
  if (realpath (child_dir, child) == NULL)
    return pgd_error (err, errno, "child directory %s", child_dir);
  if (strcmp (parent, child) == 0)
    return pgd_error (err, EINVAL, "parent and child are the same directory");
  if (check_empty_dir (child, err) < 0)
    return -1;
  if (pgd_lpath (child_dd, err, "%s/%s", child, PGD_IMAGE_DD) < 0)
    return -1;
  if (pgd_dd_chain_read (parent, &c, err) < 0 || lock_parent (parent, &lock_fd, err) < 0
      || check_parent (&c, parent, err) < 0)
    return -1;

  if (link_files (&c, child, err) < 0 || add_private_top (&c, child, child_dd, err) < 0
      || finish_clone (child, child_dd, err) < 0)
    {
      empty_dir (child);
      return -1;
    }
  return 0;
}

/* A clone of an image its server is about to snapshot online: no lock (the server holds
   it), the top may be in use; v1 only (the thin top is ours). */
static int
do_clone_served (const char *parent_dir, const char *child_dir, char *top, size_t top_len,
                 struct pgd_err *err)
{
  char child[PATH_MAX], child_dd[LPATH];
  cleanup_chain struct pgd_dd_chain c = { 0 };
  struct pgd_delta_hdr h;

  if (realpath (child_dir, child) == NULL)
    return pgd_error (err, errno, "child directory %s", child_dir);
  if (check_empty_dir (child, err) < 0
      || pgd_lpath (child_dd, err, "%s/%s", child, PGD_IMAGE_DD) < 0
      || pgd_dd_chain_read (parent_dir, &c, err) < 0)
    return -1;
  if (c.di->nimages + 1 > PGD_IMAGE_MAX_DELTAS)
    return pgd_error (err, EMLINK, "parent %s has %d deltas", parent_dir, c.di->nimages);
  if (pgd_dd_top_is_raw (&c))
    return pgd_error (err, ENOTSUP, "parent %s is a raw image", parent_dir);
  if (pgd_delta_read_header (c.files[c.n - 1], &h, err) < 0)
    return -1;
  if (h.version != 1)
    return pgd_error (err, ENOTSUP, "parent %s is a v%d image", parent_dir, h.version);
  if (link_files (&c, child, err) < 0 || add_thin_top (&c, child, child_dd, err) < 0
      || finish_clone (child, child_dd, err) < 0)
    {
      empty_dir (child);
      return -1;
    }
  cleanup_chain struct pgd_dd_chain nc = { 0 };
  if (pgd_dd_chain_read (child, &nc, err) < 0)
    return -1;
  if (snprintf (top, top_len, "%s", nc.files[nc.n - 1]) >= (int)top_len)
    return pgd_error (err, ENAMETOOLONG, "%s", nc.files[nc.n - 1]);
  return 0;
}

int
pgd_image_clone_served (const char *parent_dir, const char *child_dir, char *top, size_t top_len,
                        struct pgd_err *err)
{
  pgd_image_lib_init ();
  if (do_clone_served (parent_dir, child_dir, top, top_len, err) < 0)
    return pgd_error_wrap (err, "clone %s into %s", parent_dir, child_dir);
  return 0;
}

int
pgd_image_clone (const char *parent_dir, const char *child_dir, struct pgd_err *err)
{
  pgd_image_lib_init ();
  if (do_clone (parent_dir, child_dir, err) < 0)
    return pgd_error_wrap (err, "clone %s into %s", parent_dir, child_dir);
  return 0;
}

/* ---- grow ------------------------------------------------------------------- */

/* Grow the empty private top TOP of C (nothing mapped, file = header area) to SECTORS:
   a new thin delta replaces it by rename, then the DD's size follows. libploop's grow
   would write the whole new BAT. */
static int
grow_empty (struct pgd_dd_chain *c, const char *dir, const char *top, uint64_t sectors,
            uint32_t cluster, struct pgd_err *err)
{
  char tmp[PATH_MAX], dd[LPATH];

  if (snprintf (tmp, sizeof tmp, "%s.grow", top) >= (int)sizeof tmp)
    return pgd_error (err, ENAMETOOLONG, "%s.grow", top);
  unlink (tmp); /* left by an earlier grow that failed half way */
  if (pgd_delta_create_thin (tmp, sectors, cluster, err) < 0)
    return -1;
  if (rename (tmp, top) < 0)
    {
      int e = errno;
      unlink (tmp);
      return pgd_error (err, e, "rename %s to %s", tmp, top);
    }
  if (pgd_fsync_dir (dir, err) < 0 || pgd_lpath (dd, err, "%s/%s", dir, PGD_IMAGE_DD) < 0)
    return -1;
  c->di->size = sectors; /* <Disk_size>: informational, readers take the top header's */
  int rc = ploop_store_diskdescriptor (dd, c->di);
  if (rc != 0)
    return pgd_libploop_error (err, rc, "store", dd);
  return pgd_fsync_dir (dir, err);
}

static int
do_grow (const char *dir, uint64_t size, struct pgd_err *err)
{
  cleanup_chain struct pgd_dd_chain c = { 0 };
  struct pgd_delta_hdr h;
  struct stat st;

  if (pgd_dd_chain_read (dir, &c, err) < 0)
    return -1;
  const char *top = c.files[c.n - 1];
  if (pgd_dd_top_is_raw (&c))
    return pgd_error (err, ENOTSUP, "top delta %s is a raw image", top);
  if (stat (top, &st) < 0)
    return pgd_error (err, errno, "stat %s", top);
  if (st.st_nlink != 1)
    return pgd_error (err, 0, "top delta %s is shared (%lu links): only a private top grows", top,
                      (unsigned long)st.st_nlink);
  if (pgd_delta_read_header (top, &h, err) < 0)
    return -1;
  if (h.in_use != 0)
    return pgd_error (err, EBUSY, "top delta %s is in use", top);

  uint64_t cluster = (uint64_t)h.cluster_sectors * SECTOR_BYTES;
  uint64_t cur = h.size_sectors * SECTOR_BYTES;
  if (size > UINT64_MAX - cluster)
    return pgd_error (err, EINVAL, "size %llu: too large", (unsigned long long)size);
  uint64_t want = round_up (size, cluster);
  if (want < cur)
    return pgd_error (err, EINVAL,
                      "size %llu is smaller than the current %llu bytes: "
                      "images never shrink",
                      (unsigned long long)size, (unsigned long long)cur);
  if (want == cur)
    return 0;
  if (h.version == 1 && want / SECTOR_BYTES > V1_MAX_SECTORS)
    return pgd_error (err, EINVAL, "size %llu: over 2 TiB, the ploop v1 limit",
                      (unsigned long long)size);
  if (h.version == 1 && (h.flags & PGD_DELTA_CIF_EMPTY)
      && (uint64_t)st.st_size == (uint64_t)h.first_block_sectors * SECTOR_BYTES)
    return grow_empty (&c, dir, top, want / SECTOR_BYTES, h.cluster_sectors, err);
  int rc = ploop_grow_image (c.di, (off_t)(want / SECTOR_BYTES));
  if (rc != 0)
    return pgd_libploop_error (err, rc, "grow", top);
  /* When the BAT needs more header clusters, libploop 1.15 clears CIF_Empty even
     if the delta holds no data; the read-only check then fails with rc 7
     ("CIF_Empty flag is incorrect"). A forced read-write check of the private,
     closed top fixes the header (and fills the holes of a thin top, thinned below). */
  char path[LPATH], before[512];
  __u32 bs = c.blocksize;
  if (pgd_lpath (path, err, "%s", top) < 0)
    return -1;
  pgd_libploop_last (before, sizeof before);
  rc = ploop_check (path, PGD_CHECK_FORCE | PGD_CHECK_DETAILED | PGD_CHECK_REPAIR_SPARSE, &bs);
  if (rc != 0)
    return pgd_libploop_error (err, rc, "check grown delta", top);
  /* the expected CIF_Empty fix and hole filling: debug */
  pgd_libploop_note (PGD_LOG_DEBUG, before, "check grown delta", top);
  /* libploop wrote the grown BAT in full; pgd_delta_thin fsyncs. libploop renamed the
     DD into place without a directory fsync (pitfall 20) */
  if (pgd_delta_thin (top, err) < 0)
    return -1;
  return pgd_fsync_dir (dir, err);
}

int
pgd_image_grow (const char *dir, uint64_t size, struct pgd_err *err)
{
  pgd_image_lib_init ();
  if (do_grow (dir, size, err) < 0)
    return pgd_error_wrap (err, "grow image %s", dir);
  return 0;
}

/* ---- check ------------------------------------------------------------------ */

/* libploop's repair of the private top: clears in-use after a crash, trims
   orphaned clusters at the tail, fixes CIF_Empty; lower levels only read. */
static int
repair_top (struct pgd_dd_chain *c, struct pgd_err *err)
{
  const char *top = c->files[c->n - 1];
  struct stat st;

  if (stat (top, &st) < 0)
    return pgd_error (err, errno, "stat %s", top);
  if (st.st_nlink != 1)
    return pgd_error (err, 0, "top delta %s is shared (%lu links): never repaired in place", top,
                      (unsigned long)st.st_nlink);
  /* the top alone, as check_dd would treat it (read-write: clear in-use, trim the tail,
     fix CIF_Empty, fill holes), but not check_dd itself: it calls the thin lower deltas
     sparse. Then thin again. */
  char path[LPATH], before[512];
  __u32 bs = c->blocksize;
  if (pgd_lpath (path, err, "%s", top) < 0)
    return -1;
  pgd_libploop_last (before, sizeof before);
  int rc = ploop_check (
      path, PGD_CHECK_FORCE | PGD_CHECK_DROPINUSE | PGD_CHECK_REPAIR_SPARSE | PGD_CHECK_DETAILED,
      &bs);
  if (rc != 0)
    return pgd_libploop_error (err, rc, "repair", top);
  pgd_libploop_note (PGD_LOG_INFO, before, "repair", top);
  return pgd_delta_thin (top, err);
}

static int
do_check (const char *dir, bool repair, struct pgd_err *err)
{
  cleanup_chain struct pgd_dd_chain c = { 0 };
  char path[LPATH];

  if (pgd_dd_chain_read (dir, &c, err) < 0)
    return -1;
  if (repair && repair_top (&c, err) < 0)
    return -1;
  for (unsigned i = 0; i < c.n; i++)
    {
      /* forced: check_dd alone does not walk cleanly closed deltas (PLOOP.md §8.1);
         read-only: lower deltas may be shared with other layers */
      int flags = PGD_CHECK_FORCE | PGD_CHECK_DETAILED | PGD_CHECK_READONLY;
      __u32 bs = c.blocksize;

      if (i == 0 && c.raw_base)
        flags |= PGD_CHECK_RAW;
      bool thin = false;
      if (!(i == 0 && c.raw_base) && pgd_delta_sparse (c.files[i], &thin, NULL, err) < 0)
        return -1;
      /* libploop calls any hole sparse (rc 11): a thin delta gets our own full check */
      if (thin)
        {
          if (pgd_delta_check_thin (c.files[i], err) < 0)
            return -1;
          continue;
        }
      if (pgd_lpath (path, err, "%s", c.files[i]) < 0)
        return -1;
      int rc = ploop_check (path, flags, &bs);
      if (rc != 0)
        return pgd_libploop_error (err, rc, "check delta", c.files[i]);
    }
  return 0;
}

int
pgd_image_check (const char *dir, bool repair, struct pgd_err *err)
{
  pgd_image_lib_init ();
  if (do_check (dir, repair, err) < 0)
    return pgd_error_wrap (err, "check image %s", dir);
  return 0;
}

/* ---- allocate --------------------------------------------------------------- */

static int
do_allocate (const char *dir, uint64_t *filled, struct pgd_err *err)
{
  cleanup_chain struct pgd_dd_chain c = { 0 };
  cleanup_close int lock_fd = -1;

  *filled = 0;
  if (pgd_dd_chain_read (dir, &c, err) < 0 || lock_parent (dir, &lock_fd, err) < 0)
    return -1;
  if (lock_fd < 0)
    return pgd_error (err, EBUSY, "image is in use (%s is locked)", LOCK_FILE);
  /* zeros into holes change no byte a reader sees: safe on deltas other layers share */
  for (unsigned i = (c.raw_base ? 1 : 0); i < c.n; i++)
    {
      uint64_t n;
      if (pgd_delta_allocate (c.files[i], &n, err) < 0)
        return -1;
      *filled += n;
    }
  return 0;
}

int
pgd_image_allocate (const char *dir, uint64_t *filled, struct pgd_err *err)
{
  pgd_image_lib_init ();
  if (do_allocate (dir, filled, err) < 0)
    return pgd_error_wrap (err, "allocate image %s", dir);
  return 0;
}

/* ---- info ------------------------------------------------------------------- */

static int
do_info (const char *dir, struct pgd_image_info *info, struct pgd_err *err)
{
  cleanup_chain struct pgd_dd_chain c = { 0 };
  char dd[PATH_MAX];
  struct stat st;

  memset (info, 0, sizeof *info);
  if (pgd_dd_chain_read (dir, &c, err) < 0)
    return -1;
  const char *top = c.files[c.n - 1];
  info->ndeltas = c.n;
  info->raw_base = c.raw_base;
  if (pgd_dd_top_is_raw (&c))
    {
      info->virtual_size = c.di->size * SECTOR_BYTES;
      info->cluster_size = c.blocksize * SECTOR_BYTES;
    }
  else
    {
      struct pgd_delta_hdr h;
      if (pgd_delta_read_header (top, &h, err) < 0)
        return -1;
      info->virtual_size = h.size_sectors * SECTOR_BYTES; /* the DD's <Disk_size> can be stale */
      info->cluster_size = h.cluster_sectors * SECTOR_BYTES;
    }
  if (realpath (top, info->top_file) == NULL)
    return pgd_error (err, errno, "top delta %s", top);
  if (stat (top, &st) < 0)
    return pgd_error (err, errno, "stat %s", top);
  info->top_shared = st.st_nlink > 1;

  /* no libploop call since chain_read, so di->images is still valid (pitfall 2) */
  for (int i = 0; i < c.di->nimages; i++)
    {
      const char *file = c.di->images[i]->file;
      if (stat (file, &st) < 0)
        return pgd_error (err, errno, "stat %s", file);
      if (st.st_nlink == 1)
        info->own_bytes += (uint64_t)st.st_blocks * 512;
    }
  snprintf (dd, sizeof dd, "%s/%s", dir, PGD_IMAGE_DD);
  if (stat (dd, &st) < 0)
    return pgd_error (err, errno, "stat %s", dd);
  info->own_bytes += (uint64_t)st.st_blocks * 512;
  return 0;
}

int
pgd_image_info (const char *dir, struct pgd_image_info *info, struct pgd_err *err)
{
  if (do_info (dir, info, err) < 0)
    return pgd_error_wrap (err, "image %s", dir);
  return 0;
}
