/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ploop delta files (PLOOP.md §1). */
#include "delta.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

#define SIG_V1 "WithoutFreeSpace"
#define SIG_V2 "WithouFreSpacExt"
#define PVD_TYPE 2
#define BAT_CHUNK 4096 /* entries read per pread while scanning */

/* Offsets of the header fields (PLOOP.md §1.1). */
enum
{
  OFF_SIG = 0,
  OFF_TYPE = 16,
  OFF_HEADS = 20,
  OFF_CYLINDERS = 24,
  OFF_SECTORS = 28,
  OFF_SIZE = 32,
  OFF_SIZE_SECTORS = 36,
  OFF_IN_USE = 44,
  OFF_FIRST_BLOCK = 48,
  OFF_FLAGS = 52,
};

static uint32_t
get32 (const unsigned char *p, size_t off)
{
  uint32_t v;
  memcpy (&v, p + off, sizeof v);
  return le32toh (v);
}

static uint64_t
get64 (const unsigned char *p, size_t off)
{
  uint64_t v;
  memcpy (&v, p + off, sizeof v);
  return le64toh (v);
}

static void
put32 (unsigned char *p, size_t off, uint32_t v)
{
  v = htole32 (v);
  memcpy (p + off, &v, sizeof v);
}

static void
put64 (unsigned char *p, size_t off, uint64_t v)
{
  v = htole64 (v);
  memcpy (p + off, &v, sizeof v);
}

static bool
cluster_sectors_valid (uint32_t s)
{
  return s >= PGD_DELTA_MIN_CLUSTER_SECTORS && s <= PGD_DELTA_MAX_CLUSTER_SECTORS
         && (s & (s - 1)) == 0;
}

int
pgd_delta_hdr_parse (const void *raw, uint64_t file_size, const char *name, struct pgd_delta_hdr *h,
                     struct pgd_err *err)
{
  const unsigned char *p = raw;

  memset (h, 0, sizeof *h);
  if (memcmp (p + OFF_SIG, SIG_V1, 16) == 0)
    h->version = 1;
  else if (memcmp (p + OFF_SIG, SIG_V2, 16) == 0)
    h->version = 2;
  else
    return pgd_error (err, EINVAL, "delta %s: wrong signature", name);
  if (get32 (p, OFF_TYPE) != PVD_TYPE)
    return pgd_error (err, EINVAL, "delta %s: wrong type %u", name, get32 (p, OFF_TYPE));
  h->cluster_sectors = get32 (p, OFF_SECTORS);
  if (!cluster_sectors_valid (h->cluster_sectors))
    return pgd_error (err, EINVAL, "delta %s: wrong cluster size (%u sectors)", name,
                      h->cluster_sectors);
  h->first_block_sectors = get32 (p, OFF_FIRST_BLOCK);
  if (h->first_block_sectors == 0 || h->first_block_sectors % h->cluster_sectors != 0)
    return pgd_error (err, EINVAL, "delta %s: wrong first block offset %u", name,
                      h->first_block_sectors);
  h->bat_entries = get32 (p, OFF_SIZE);
  if (PGD_DELTA_HDR_SIZE + 4 * (uint64_t)h->bat_entries
      > (uint64_t)h->first_block_sectors * PGD_SECTOR_SIZE)
    return pgd_error (err, EINVAL,
                      "delta %s: BAT of %u entries does not fit before the "
                      "first block at sector %u",
                      name, h->bat_entries, h->first_block_sectors);
  if (h->version == 1 && get32 (p, OFF_SIZE_SECTORS + 4) != 0)
    return pgd_error (err, EINVAL, "delta %s: v1 size field has high bits set", name);
  h->size_sectors = h->version == 1 ? get32 (p, OFF_SIZE_SECTORS) : get64 (p, OFF_SIZE_SECTORS);
  if (h->size_sectors == 0 || (uint64_t)h->bat_entries * h->cluster_sectors < h->size_sectors)
    return pgd_error (err, EINVAL,
                      "delta %s: size of %llu sectors does not match a BAT of "
                      "%u entries",
                      name, (unsigned long long)h->size_sectors, h->bat_entries);
  h->in_use = get32 (p, OFF_IN_USE);
  h->flags = get32 (p, OFF_FLAGS);
  if (h->flags & PGD_DELTA_CIF_CONVERT)
    return pgd_error (err, EINVAL, "delta %s: a format conversion is in progress", name);
  if (file_size < (uint64_t)h->first_block_sectors * PGD_SECTOR_SIZE)
    return pgd_error (err, EINVAL,
                      "delta %s: file of %llu bytes is shorter than its "
                      "header",
                      name, (unsigned long long)file_size);
  return 0;
}

void
pgd_delta_hdr_encode (const struct pgd_delta_hdr *h, void *raw)
{
  unsigned char *p = raw;

  memset (p, 0, PGD_DELTA_HDR_SIZE);
  memcpy (p + OFF_SIG, h->version == 2 ? SIG_V2 : SIG_V1, 16);
  put32 (p, OFF_TYPE, PVD_TYPE);
  put32 (p, OFF_HEADS, 16);
  put32 (p, OFF_CYLINDERS, (uint32_t)(h->size_sectors / (16 * 63)));
  put32 (p, OFF_SECTORS, h->cluster_sectors);
  put32 (p, OFF_SIZE, h->bat_entries);
  if (h->version == 2)
    put64 (p, OFF_SIZE_SECTORS, h->size_sectors);
  else
    put32 (p, OFF_SIZE_SECTORS, (uint32_t)h->size_sectors);
  put32 (p, OFF_IN_USE, h->in_use);
  put32 (p, OFF_FIRST_BLOCK, h->first_block_sectors);
  put32 (p, OFF_FLAGS, h->flags);
}

static int
pread_full (int fd, void *buf, size_t len, uint64_t off, const char *name, struct pgd_err *err)
{
  char *p = buf;

  while (len > 0)
    {
      ssize_t n = pread (fd, p, len, (off_t)off);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return pgd_error (err, errno, "read %s at %llu", name, (unsigned long long)off);
      if (n == 0)
        return pgd_error (err, EIO, "read %s at %llu: unexpected end of file", name,
                          (unsigned long long)off);
      p += n;
      len -= n;
      off += n;
    }
  return 0;
}

int
pgd_delta_read_header (const char *path, struct pgd_delta_hdr *h, struct pgd_err *err)
{
  unsigned char raw[PGD_DELTA_HDR_SIZE];
  struct stat st;
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    return pgd_error (err, errno, "open %s", path);
  if (fstat (fd, &st) < 0)
    return pgd_error (err, errno, "stat %s", path);
  if (pread_full (fd, raw, sizeof raw, 0, path, err) < 0)
    return -1;
  return pgd_delta_hdr_parse (raw, (uint64_t)st.st_size, path, h, err);
}

/* A second, O_DIRECT descriptor of the same open file (not the same path: it could have
   been replaced), when the filesystem supports direct I/O. Data goes through it so the
   server neither fills the page cache nor allocates page cache in its I/O path. */
static void
open_direct (struct pgd_delta *d, bool rw)
{
  char self[64];
  struct statx sx;

  if (statx (d->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) < 0 || !(sx.stx_mask & STATX_DIOALIGN)
      || sx.stx_dio_offset_align == 0)
    return;
  snprintf (self, sizeof self, "/proc/self/fd/%d", d->fd);
  d->dfd = open (self, (rw ? O_RDWR : O_RDONLY) | O_DIRECT | O_CLOEXEC);
  if (d->dfd < 0)
    return;
  d->dio_mem_align = sx.stx_dio_mem_align ? sx.stx_dio_mem_align : 4096;
  d->dio_off_align = sx.stx_dio_offset_align;
}

static int
open_file (struct pgd_delta *d, const char *path, bool rw, unsigned flags, struct pgd_err *err)
{
  struct stat st;

  memset (d, 0, sizeof *d);
  d->fd = -1;
  d->dfd = -1;
  d->path = strdup (path);
  if (d->path == NULL)
    return pgd_error (err, ENOMEM, "open %s", path);
  d->fd = open (path, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (d->fd < 0)
    {
      pgd_error (err, errno, "open %s", path);
      pgd_delta_close (d);
      return -1;
    }
  if (fstat (d->fd, &st) < 0 || !S_ISREG (st.st_mode))
    {
      pgd_error (err, S_ISREG (st.st_mode) ? errno : EINVAL, "stat %s", path);
      pgd_delta_close (d);
      return -1;
    }
  d->writable = rw;
  d->file_size = (uint64_t)st.st_size;
  if (!(flags & PGD_DELTA_BUFFERED))
    open_direct (d, rw);
  return 0;
}

int
pgd_delta_open (struct pgd_delta *d, const char *path, unsigned flags, struct pgd_err *err)
{
  bool rw = flags & PGD_DELTA_RW;

  if (open_file (d, path, rw, flags, err) < 0)
    return -1;
  if (pread_full (d->fd, d->hdr_raw, sizeof d->hdr_raw, 0, path, err) < 0
      || pgd_delta_hdr_parse (d->hdr_raw, d->file_size, path, &d->h, err) < 0)
    goto fail;
  if (d->h.in_use != 0 && (rw || !(flags & PGD_DELTA_ALLOW_IN_USE)))
    {
      pgd_error (err, EBUSY, "delta %s is in use (not closed cleanly; check it first)", path);
      goto fail;
    }
  d->cluster_bytes = (uint64_t)d->h.cluster_sectors * PGD_SECTOR_SIZE;
  d->header_clusters = d->h.first_block_sectors / d->h.cluster_sectors;
  d->file_clusters = d->file_size / d->cluster_bytes;
  return 0;

fail:
  pgd_delta_close (d);
  return -1;
}

int
pgd_delta_open_raw (struct pgd_delta *d, const char *path, uint32_t cluster_sectors, unsigned flags,
                    struct pgd_err *err)
{
  if (!cluster_sectors_valid (cluster_sectors))
    return pgd_error (err, EINVAL, "raw base %s: wrong cluster size (%u sectors)", path,
                      cluster_sectors);
  if (open_file (d, path, false, flags & PGD_DELTA_BUFFERED, err) < 0)
    return -1;
  d->raw = true;
  d->h.cluster_sectors = cluster_sectors;
  d->cluster_bytes = (uint64_t)cluster_sectors * PGD_SECTOR_SIZE;
  d->h.size_sectors = d->file_size / PGD_SECTOR_SIZE;
  d->file_clusters = (d->file_size + d->cluster_bytes - 1) / d->cluster_bytes;
  d->h.bat_entries = d->file_clusters > UINT32_MAX ? UINT32_MAX : (uint32_t)d->file_clusters;
  return 0;
}

void
pgd_delta_close (struct pgd_delta *d)
{
  if (d->path == NULL)
    return; /* zeroed or closed */
  if (d->fd >= 0)
    close (d->fd);
  if (d->dfd >= 0)
    close (d->dfd);
  d->fd = -1;
  d->dfd = -1;
  free (d->path);
  d->path = NULL;
}

uint32_t
pgd_delta_entry_for (const struct pgd_delta *d, uint64_t cluster)
{
  return d->h.version == 2 ? (uint32_t)cluster : (uint32_t)(cluster * d->h.cluster_sectors);
}

uint64_t
pgd_delta_max_cluster (const struct pgd_delta *d)
{
  return d->h.version == 2 ? UINT32_MAX : UINT32_MAX / d->h.cluster_sectors;
}

static int
scan_raw (const struct pgd_delta *d, pgd_delta_visit_fn visit, void *ctx)
{
  for (uint64_t vc = 0; vc < d->h.bat_entries; vc++)
    visit (ctx, (uint32_t)vc, vc);
  return 0;
}

/* BAT entries from FIRST on that lie in a hole of the file (thin delta, delta_thin.c):
   they read as 0, so a scan skips them without reading. */
static uint64_t
hole_entries (const struct pgd_delta *d, uint64_t first)
{
  uint64_t off = PGD_DELTA_HDR_SIZE + first * 4;
  off_t data = lseek (d->fd, (off_t)off, SEEK_DATA);

  if (data < 0)
    return errno == ENXIO ? d->h.bat_entries - first : 0;
  if ((uint64_t)data <= off)
    return 0;
  uint64_t n = ((uint64_t)data - off) / 4;
  return n < d->h.bat_entries - first ? n : d->h.bat_entries - first;
}

int
pgd_delta_scan_bat (const struct pgd_delta *d, pgd_delta_visit_fn visit, void *ctx,
                    struct pgd_err *err)
{
  uint32_t chunk[BAT_CHUNK];
  cleanup_free uint8_t *used = NULL;

  if (d->raw)
    return scan_raw (d, visit, ctx);
  used = calloc (d->file_clusters / 8 + 1, 1);
  if (used == NULL)
    return pgd_error (err, ENOMEM, "delta %s: BAT scan", d->path);
  for (uint64_t first = 0, n; first < d->h.bat_entries; first += n)
    {
      n = hole_entries (d, first);
      if (n > 0)
        continue; /* a thin delta's BAT hole: nothing mapped there */
      n = d->h.bat_entries - first;
      if (n > BAT_CHUNK)
        n = BAT_CHUNK;
      if (pread_full (d->fd, chunk, n * 4, PGD_DELTA_HDR_SIZE + first * 4, d->path, err) < 0)
        return -1;
      for (uint64_t i = 0; i < n; i++)
        {
          uint32_t e = le32toh (chunk[i]);
          uint64_t vc = first + i, cl;
          if (e == 0)
            continue;
          if (d->h.version == 1 && e % d->h.cluster_sectors != 0)
            return pgd_error (err, EUCLEAN,
                              "delta %s: BAT entry %llu (%u) is not cluster "
                              "aligned",
                              d->path, (unsigned long long)vc, e);
          cl = d->h.version == 1 ? e / d->h.cluster_sectors : e;
          if (cl < d->header_clusters)
            return pgd_error (err, EUCLEAN, "delta %s: BAT entry %llu points into the header",
                              d->path, (unsigned long long)vc);
          if (cl >= d->file_clusters)
            return pgd_error (err, EUCLEAN,
                              "delta %s: data cluster %llu of entry %llu is "
                              "beyond the end of the file",
                              d->path, (unsigned long long)cl, (unsigned long long)vc);
          if (used[cl / 8] & (1u << (cl % 8)))
            return pgd_error (err, EUCLEAN, "delta %s: cluster %llu is used more than once",
                              d->path, (unsigned long long)cl);
          used[cl / 8] |= 1u << (cl % 8);
          visit (ctx, (uint32_t)vc, cl);
        }
    }
  return 0;
}

void
pgd_delta_hdr_set (struct pgd_delta *d, uint32_t in_use, uint32_t flags)
{
  put32 (d->hdr_raw, OFF_IN_USE, in_use);
  put32 (d->hdr_raw, OFF_FLAGS, flags);
  d->h.in_use = in_use;
  d->h.flags = flags;
}

int
pgd_delta_write_header (struct pgd_delta *d, uint32_t in_use, uint32_t flags, struct pgd_err *err)
{
  if (!d->writable || d->raw)
    return pgd_error (err, EROFS, "delta %s: header update on a read-only delta", d->path);
  pgd_delta_hdr_set (d, in_use, flags);
  for (size_t done = 0; done < sizeof d->hdr_raw;)
    {
      ssize_t n = pwrite (d->fd, d->hdr_raw + done, sizeof d->hdr_raw - done, (off_t)done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return pgd_error (err, errno, "write header of %s", d->path);
      done += n;
    }
  if (fsync (d->fd) < 0)
    return pgd_error (err, errno, "fsync %s", d->path);
  return 0;
}
