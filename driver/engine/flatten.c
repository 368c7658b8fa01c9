/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A standalone single-delta copy of a closed image: how a base layer gets its own
   copy of the formatted template (a sparse copy of one delta file), and how a layer
   whose parent's chain is as deep as libploop allows starts a chain afresh (every
   mapped cluster of the parent read through the chain and written into one delta).
   Either way the copy is block for block the source's disk. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain.h"
#include "image.h"
#include "log.h"
#include "util.h"

/* Bytes moved per read/write of the merge (at least one cluster). */
#define MERGE_CHUNK (1u << 20)

/* Copy the data extents of SRC_PATH over DST_PATH (truncated), keeping its holes;
 *COPIED gets the bytes of data copied. The file is fsynced. */
static int
copy_sparse (const char *src_path, const char *dst_path, uint64_t *copied, struct pgd_err *err)
{
  cleanup_close int in = open (src_path, O_RDONLY | O_CLOEXEC);
  cleanup_close int out = -1;
  struct stat st;

  if (in < 0)
    return pgd_error (err, errno, "open %s", src_path);
  if (fstat (in, &st) < 0)
    return pgd_error (err, errno, "stat %s", src_path);
  out = open (dst_path, O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (out < 0)
    return pgd_error (err, errno, "open %s", dst_path);
  if (ftruncate (out, st.st_size) < 0)
    return pgd_error (err, errno, "truncate %s", dst_path);
  *copied = 0;
  for (off_t data = 0; data < st.st_size;)
    {
      data = lseek (in, data, SEEK_DATA);
      if (data < 0)
        {
          if (errno == ENXIO)
            break;
          return pgd_error (err, errno, "seek data in %s", src_path);
        }
      off_t hole = lseek (in, data, SEEK_HOLE);
      if (hole < 0)
        return pgd_error (err, errno, "seek hole in %s", src_path);
      off_t from = data, to = data;
      while (from < hole)
        {
          /* in-kernel copy: a reflink where the filesystem shares extents */
          ssize_t n = copy_file_range (in, &from, out, &to, (size_t)(hole - from), 0);
          if (n < 0 && errno == EINTR)
            continue;
          if (n < 0)
            return pgd_error (err, errno, "copy %s to %s", src_path, dst_path);
          if (n == 0)
            return pgd_error (err, EIO, "copy %s to %s: %s shrank", src_path, dst_path, src_path);
          *copied += (uint64_t)n;
        }
      data = hole;
    }
  if (fsync (out) < 0)
    return pgd_error (err, errno, "fsync %s", dst_path);
  return 0;
}

static bool
all_zero (const char *buf, size_t len)
{
  return len == 0 || (buf[0] == 0 && memcmp (buf, buf + 1, len - 1) == 0);
}

/* Read every cluster some level of SRC maps and write those that are not all zeros
   into DST; *COPIED counts the bytes written. */
static int
merge_chain (struct pgd_chain *src, struct pgd_chain *dst, uint64_t *copied, struct pgd_err *err)
{
  uint64_t size = pgd_chain_size (src);
  uint32_t cluster = pgd_chain_cluster_size (src);
  size_t chunk = cluster > MERGE_CHUNK ? cluster : MERGE_CHUNK;
  cleanup_free char *buf = NULL;

  if (posix_memalign ((void **)&buf, 4096, chunk) != 0)
    return pgd_error (err, ENOMEM, "merge buffer");
  *copied = 0;
  for (uint64_t off = 0; off < size;)
    {
      uint64_t data, hole;
      if (pgd_chain_seek (src, off, true, &data, err) < 0)
        return err->errnum == ENXIO ? 0 : -1;
      if (pgd_chain_seek (src, data, false, &hole, err) < 0)
        return -1;
      for (uint64_t at = data; at < hole;)
        {
          size_t n = hole - at < chunk ? (size_t)(hole - at) : chunk;
          if (pgd_chain_read (src, buf, n, at, err) < 0)
            return -1;
          for (size_t c = 0; c < n; c += cluster)
            {
              size_t len = n - c < cluster ? n - c : cluster;
              if (all_zero (buf + c, len))
                continue;
              if (pgd_chain_write (dst, buf + c, len, at + c, err) < 0)
                return -1;
              *copied += len;
            }
          at += n;
        }
      off = hole;
    }
  return 0;
}

/* Merge the chain of the image SRC_DIR into the new empty image DST_DIR. The source is
   opened read-only under a lock of its own in DST_DIR (its usual lock may be held by
   a server serving it read-only; its deltas are then never written). */
static int
merge_into (const char *src_dir, const char *dst_dir, uint64_t *copied, struct pgd_err *err)
{
  char src_dd[PATH_MAX], dst_dd[PATH_MAX], lock_as[PATH_MAX], lock_file[PATH_MAX + 8];
  char **files = NULL;
  bool raw = false;
  struct pgd_chain *src = NULL, *dst = NULL;
  int ret;

  snprintf (src_dd, sizeof src_dd, "%s/%s", src_dir, PGD_IMAGE_DD);
  snprintf (dst_dd, sizeof dst_dd, "%s/%s", dst_dir, PGD_IMAGE_DD);
  snprintf (lock_as, sizeof lock_as, "%s/source", dst_dir);
  snprintf (lock_file, sizeof lock_file, "%s%s", lock_as, PGD_CHAIN_LOCK_SUFFIX);
  if (pgd_chain_list (src_dd, &files, &raw, err) < 0)
    return -1;
  ret = pgd_chain_open_files (&src, lock_as, files, raw, PGD_CHAIN_RO, err);
  pgd_chain_free_list (files);
  if (ret == 0)
    ret = pgd_chain_open (&dst, dst_dd, 0, err);
  if (ret == 0)
    ret = merge_chain (src, dst, copied, err);
  if (dst != NULL)
    {
      struct pgd_err cerr;
      if (pgd_chain_close (dst, &cerr) < 0 && ret == 0)
        {
          *err = cerr;
          ret = -1;
        }
    }
  if (src != NULL)
    {
      struct pgd_err ignored;
      if (pgd_chain_close (src, &ignored) < 0) /* read-only: nothing was written */
        pgd_log (PGD_LOG_DEBUG, "close %s: %s", src_dir, ignored.msg);
    }
  unlink (lock_file);
  return ret;
}

int
pgd_image_copy (const char *src_dir, const char *dst_dir, uint64_t *copied, struct pgd_err *err)
{
  struct pgd_image_info info;
  char src_delta[PATH_MAX], dst_delta[PATH_MAX];
  uint64_t bytes = 0;
  int ret;

  if (pgd_image_info (src_dir, &info, err) < 0)
    return pgd_error_wrap (err, "copy image %s", src_dir);
  if (pgd_image_create (dst_dir, info.virtual_size, info.cluster_size, err) < 0)
    return pgd_error_wrap (err, "copy image %s into %s", src_dir, dst_dir);
  snprintf (src_delta, sizeof src_delta, "%s", info.top_file);
  snprintf (dst_delta, sizeof dst_delta, "%s/%s", dst_dir, PGD_IMAGE_BASE);
  if (info.ndeltas == 1 && info.raw_base == false)
    ret = copy_sparse (src_delta, dst_delta, &bytes, err);
  else
    ret = merge_into (src_dir, dst_dir, &bytes, err);
  if (ret == 0)
    ret = pgd_fsync_dir (dst_dir, err);
  if (ret < 0)
    return pgd_error_wrap (err, "copy image %s into %s", src_dir, dst_dir);
  if (copied)
    *copied = bytes;
  return 0;
}
