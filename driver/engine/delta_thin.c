/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Thin deltas: a BAT that is a file hole where it maps nothing (PLOOP.md §1.2 says the
   header area is written in full; a hole reads as zeros, i.e. "not in this delta", so
   the format stays valid for every reader, but libploop's `ploop check` calls such a
   file sparse: rc 11). A new delta then costs one page whatever its virtual size.
   pgd_delta_allocate turns a thin delta back into a fully written one. */
#include "delta.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define FS_PAGE 4096           /* punch / fill granularity (ext4 block) */
#define SCAN_CHUNK (64 * 1024) /* bytes read per pread while looking for zero pages */
#define V1_MAX_SECTORS 0xffffffffull

static int
write_full (int fd, const void *buf, size_t len, uint64_t off, const char *name,
            struct pgd_err *err)
{
  const char *p = buf;

  while (len > 0)
    {
      ssize_t n = pwrite (fd, p, len, (off_t)off);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return pgd_error (err, errno, "write %s at %llu", name, (unsigned long long)off);
      p += n;
      len -= n;
      off += n;
    }
  return 0;
}

int
pgd_delta_geometry (uint64_t size_sectors, uint32_t cluster_sectors, struct pgd_delta_hdr *h,
                    struct pgd_err *err)
{
  uint64_t cluster_bytes = (uint64_t)cluster_sectors * PGD_SECTOR_SIZE;

  if (cluster_sectors < PGD_DELTA_MIN_CLUSTER_SECTORS
      || cluster_sectors > PGD_DELTA_MAX_CLUSTER_SECTORS
      || (cluster_sectors & (cluster_sectors - 1)) != 0)
    return pgd_error (err, EINVAL,
                      "cluster of %u sectors: not a power of two from 32 KiB to 64 MiB",
                      cluster_sectors);
  if (size_sectors == 0 || size_sectors > V1_MAX_SECTORS)
    return pgd_error (err, EINVAL, "size of %llu sectors: not between 1 and 2^32-1 (ploop v1)",
                      (unsigned long long)size_sectors);
  memset (h, 0, sizeof *h);
  h->version = 1;
  h->cluster_sectors = cluster_sectors;
  h->bat_entries = (uint32_t)((size_sectors + cluster_sectors - 1) / cluster_sectors);
  h->size_sectors = size_sectors;
  uint64_t hdr_clusters
      = (PGD_DELTA_HDR_SIZE + 4ull * h->bat_entries + cluster_bytes - 1) / cluster_bytes;
  h->first_block_sectors = (uint32_t)(hdr_clusters * cluster_sectors);
  h->flags = PGD_DELTA_CIF_EMPTY;
  return 0;
}

int
pgd_delta_create_thin (const char *path, uint64_t size_sectors, uint32_t cluster_sectors,
                       struct pgd_err *err)
{
  struct pgd_delta_hdr h;
  unsigned char raw[PGD_DELTA_HDR_SIZE];

  if (pgd_delta_geometry (size_sectors, cluster_sectors, &h, err) < 0)
    return pgd_error_wrap (err, "delta %s", path);
  pgd_delta_hdr_encode (&h, raw);
  cleanup_close int fd = open (path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return pgd_error (err, errno, "create %s", path);
  /* the size first: a header never names a first block past the end of its file */
  if (ftruncate (fd, (off_t)h.first_block_sectors * PGD_SECTOR_SIZE) < 0)
    return pgd_error (err, errno, "truncate %s", path);
  if (write_full (fd, raw, sizeof raw, 0, path, err) < 0)
    return -1;
  if (fsync (fd) < 0)
    return pgd_error (err, errno, "fsync %s", path);
  return 0;
}

/* Bytes of the header area (header + BAT clusters) of the delta open as FD, from its
   header. */
static int
header_bytes (int fd, const char *path, uint64_t *bytes, uint64_t *file_size, struct pgd_err *err)
{
  unsigned char raw[PGD_DELTA_HDR_SIZE];
  struct pgd_delta_hdr h;
  struct stat st;

  if (fstat (fd, &st) < 0)
    return pgd_error (err, errno, "stat %s", path);
  ssize_t n = pread (fd, raw, sizeof raw, 0);
  if (n < 0)
    return pgd_error (err, errno, "read %s", path);
  if (n != (ssize_t)sizeof raw)
    return pgd_error (err, EINVAL, "%s: not a ploop delta (%zd bytes)", path, n);
  if (pgd_delta_hdr_parse (raw, (uint64_t)st.st_size, path, &h, err) < 0)
    return -1;
  *bytes = (uint64_t)h.first_block_sectors * PGD_SECTOR_SIZE;
  *file_size = (uint64_t)st.st_size;
  return 0;
}

/* Next hole (DATA false) or data (DATA true) at or after OFF, LIMIT if none before it. */
static int
seek_next (int fd, uint64_t off, bool data, uint64_t limit, const char *path, uint64_t *out,
           struct pgd_err *err)
{
  off_t r = lseek (fd, (off_t)off, data ? SEEK_DATA : SEEK_HOLE);

  if (r < 0 && errno == ENXIO)
    r = (off_t)limit;
  else if (r < 0)
    return pgd_error (err, errno, "seek in %s", path);
  *out = (uint64_t)r < limit ? (uint64_t)r : limit;
  return 0;
}

int
pgd_delta_sparse (const char *path, bool *header_holes, bool *data_holes, struct pgd_err *err)
{
  uint64_t hdr = 0, size = 0, hole = 0;
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    return pgd_error (err, errno, "open %s", path);
  if (header_bytes (fd, path, &hdr, &size, err) < 0
      || seek_next (fd, 0, false, size, path, &hole, err) < 0)
    return -1;
  *header_holes = hole < hdr;
  if (data_holes == NULL)
    return 0;
  if (seek_next (fd, hdr, false, size, path, &hole, err) < 0)
    return -1;
  *data_holes = hole < size;
  return 0;
}

static bool
page_zero (const unsigned char *p)
{
  static const unsigned char zero[FS_PAGE];
  return memcmp (p, zero, FS_PAGE) == 0;
}

static int
punch (int fd, uint64_t off, uint64_t len, const char *path, struct pgd_err *err)
{
  if (len == 0)
    return 0;
  if (fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
    return pgd_error (err, errno, "punch %s at %llu+%llu", path, (unsigned long long)off,
                      (unsigned long long)len);
  return 0;
}

int
pgd_delta_thin (const char *path, struct pgd_err *err)
{
  static unsigned char buf[SCAN_CHUNK] __attribute__ ((aligned (FS_PAGE)));
  uint64_t hdr, size, run = 0, run_len = 0;
  cleanup_close int fd = open (path, O_RDWR | O_CLOEXEC);

  if (fd < 0)
    return pgd_error (err, errno, "open %s", path);
  if (header_bytes (fd, path, &hdr, &size, err) < 0)
    return -1;
  /* page 0 holds the header: always kept */
  for (uint64_t off = FS_PAGE; off < hdr;)
    {
      uint64_t data = 0;
      if (seek_next (fd, off, true, hdr, path, &data, err) < 0)
        return -1;
      if (data > off)
        { /* already a hole: extends the current run */
          if (run_len == 0)
            run = off;
          run_len += data - off;
          off = data;
          continue;
        }
      size_t n = hdr - off < SCAN_CHUNK ? hdr - off : SCAN_CHUNK;
      ssize_t got = pread (fd, buf, n, (off_t)off);
      if (got < 0)
        return pgd_error (err, errno, "read %s at %llu", path, (unsigned long long)off);
      if ((size_t)got != n)
        return pgd_error (err, EIO, "read %s at %llu: short", path, (unsigned long long)off);
      for (size_t p = 0; p < n; p += FS_PAGE)
        if (page_zero (buf + p))
          {
            if (run_len == 0)
              run = off + p;
            run_len += FS_PAGE;
          }
        else
          {
            if (punch (fd, run, run_len, path, err) < 0)
              return -1;
            run_len = 0;
          }
      off += n;
    }
  if (punch (fd, run, run_len, path, err) < 0)
    return -1;
  if (fsync (fd) < 0)
    return pgd_error (err, errno, "fsync %s", path);
  return 0;
}

int
pgd_delta_allocate (const char *path, uint64_t *filled, struct pgd_err *err)
{
  static const unsigned char zero[SCAN_CHUNK];
  uint64_t hdr, size;
  cleanup_close int fd = open (path, O_RDWR | O_CLOEXEC);

  *filled = 0;
  if (fd < 0)
    return pgd_error (err, errno, "open %s", path);
  if (header_bytes (fd, path, &hdr, &size, err) < 0)
    return -1;
  for (uint64_t off = 0; off < hdr;)
    {
      uint64_t hole = 0, data = 0;
      if (seek_next (fd, off, false, hdr, path, &hole, err) < 0)
        return -1;
      if (hole >= hdr)
        break;
      if (seek_next (fd, hole, true, hdr, path, &data, err) < 0)
        return -1;
      for (uint64_t at = hole; at < data;)
        {
          size_t n = data - at < SCAN_CHUNK ? data - at : SCAN_CHUNK;
          if (write_full (fd, zero, n, at, path, err) < 0)
            return -1;
          at += n;
        }
      *filled += data - hole;
      off = data;
    }
  if (*filled > 0 && fsync (fd) < 0)
    return pgd_error (err, errno, "fsync %s", path);
  return 0;
}

/* Counts mapped entries for the CIF_Empty check. */
static void
count_entry (void *ctx, uint32_t vc, uint64_t cluster)
{
  (void)vc;
  (void)cluster;
  (*(uint64_t *)ctx)++;
}

int
pgd_delta_check_thin (const char *path, struct pgd_err *err)
{
  struct pgd_delta d;
  bool hdr_holes, data_holes;
  uint64_t mapped = 0;
  int rc = -1;

  if (pgd_delta_sparse (path, &hdr_holes, &data_holes, err) < 0)
    return -1;
  if (data_holes)
    return pgd_error (err, EUCLEAN, "delta %s: a hole in its data area", path);
  if (pgd_delta_open (&d, path, PGD_DELTA_BUFFERED, err) < 0)
    return -1;
  if (d.file_size % d.cluster_bytes != 0)
    pgd_error (err, EUCLEAN, "delta %s: size %llu is not a whole number of clusters", path,
               (unsigned long long)d.file_size);
  else if (pgd_delta_scan_bat (&d, count_entry, &mapped, err) < 0)
    ;
  else if ((mapped > 0) == !!(d.h.flags & PGD_DELTA_CIF_EMPTY))
    pgd_error (err, EUCLEAN, "delta %s: CIF_Empty flag is incorrect (%llu clusters mapped)", path,
               (unsigned long long)mapped);
  else
    rc = 0;
  pgd_delta_close (&d);
  return rc;
}
