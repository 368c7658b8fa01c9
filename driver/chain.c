/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The delta chain behind one served image (PLOOP.md §2).

   Map: one u32 per virtual cluster, 0 = no level maps it, otherwise
   (level << idx_bits) | (file cluster + 1), level 0 being the top. A lookup is one
   atomic load, so readers never see half an update. The top's own BAT is not kept
   apart: its entries are the map entries of level 0, and BAT pages are rebuilt from
   the map when they are written back.

   Locking: reads and in-place overwrites of clusters the top already owns take no
   lock. Allocation (append + copy on write), discard and flush run under one mutex,
   so a flush never writes a BAT entry whose cluster was not covered by its first
   fdatasync (data is durable before the entry that points at it). */
#include "chain.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <ploop/libploop.h>

#include "delta.h"
#include "util.h"

/* Exported by libploop 1.15 but not declared (PLOOP.md §5.1). */
char **make_images_list (struct ploop_disk_images_data *di, const char *guid, int reverse);

#define MAX_LEVELS 128         /* libploop's limit of deltas in one image */
#define ZERO_BUF (64 * 1024)    /* source of zero padding for partial appends */
#define BOUNCE_BUF (256 * 1024) /* copy-on-write buffer (direct I/O, so no page cache) */
#define IO_ALIGN 4096           /* buffers usable for direct I/O */
#define BATCH_IOV 256          /* iovecs gathered into one pwritev */
#define BATCH_CLUSTERS 64      /* clusters allocated per lock hold */
#define BAT_ENTRIES_PER_PAGE (PGD_DELTA_BAT_PAGE / 4)
#define HDR_ENTRIES (PGD_DELTA_HDR_SIZE / 4) /* vc i is u32 index i + 16 */

static char zero_buf[ZERO_BUF] __attribute__ ((aligned (IO_ALIGN)));

struct pgd_chain
{
  unsigned nlevels;
  struct pgd_delta *levels; /* [0] = top */
  bool ro;
  unsigned dflags;          /* PGD_DELTA_BUFFERED or 0 */
  int lock_fd;
  uint64_t size;            /* virtual bytes */
  uint64_t cb;              /* cluster bytes */
  uint32_t nclusters;       /* map entries = top's m_Size */
  unsigned idx_bits;
  uint32_t *map;
  uint64_t *lower;          /* bitmap: some level below the top maps vc */
  uint64_t *dirty;          /* bitmap of dirty BAT pages of the top */
  uint32_t npages;
  pthread_mutex_t lock;     /* allocation, discard, flush */
  uint64_t alloc_head;      /* next file cluster of the top */
  uint64_t max_alloc;       /* first file cluster that may not be allocated */
  uint64_t top_mapped;      /* entries the top maps (CIF_Empty) */
  int data_dirty;           /* written since the last flush (atomic) */
  bool trim;                /* clusters were unmapped: cut orphans off the tail at flush */
  char *bounce;
  uint32_t *page;           /* one BAT page being written (aligned) */
  struct pgd_chain_stats st;
};

static inline uint32_t
map_get (const struct pgd_chain *c, uint64_t vc)
{
  return __atomic_load_n (&c->map[vc], __ATOMIC_ACQUIRE);
}

static inline void
map_set (struct pgd_chain *c, uint64_t vc, uint32_t v)
{
  __atomic_store_n (&c->map[vc], v, __ATOMIC_RELEASE);
}

static inline uint32_t
map_enc (const struct pgd_chain *c, unsigned level, uint64_t cluster)
{
  return (uint32_t) (((uint64_t) level << c->idx_bits) | (cluster + 1));
}

static inline unsigned
map_level (const struct pgd_chain *c, uint32_t v)
{
  return c->idx_bits >= 32 ? 0 : v >> c->idx_bits;
}

static inline uint64_t
map_cluster (const struct pgd_chain *c, uint32_t v)
{
  uint64_t mask = c->idx_bits >= 32 ? UINT32_MAX : (1ULL << c->idx_bits) - 1;
  return (v & mask) - 1;
}

static inline bool
top_owns (const struct pgd_chain *c, uint32_t v)
{
  return v != 0 && map_level (c, v) == 0;
}

/* W is the entry K clusters after V in the same level and file (one read/write run) */
static inline bool
continues (const struct pgd_chain *c, uint32_t v, uint32_t w, uint64_t k)
{
  return w == v + k && map_level (c, w) == map_level (c, v);
}

static inline bool
bit_test (const uint64_t *b, uint64_t i)
{
  return (b[i / 64] >> (i % 64)) & 1;
}

static inline void
bit_set (uint64_t *b, uint64_t i)
{
  b[i / 64] |= 1ULL << (i % 64);
}

static void
stat_add (uint64_t *counter, uint64_t n)
{
  __atomic_add_fetch (counter, n, __ATOMIC_RELAXED);
}

/* ---- image description and lock ---------------------------------------------- */

int
pgd_chain_lock (const char *dd_path, int *fd, struct pgd_err *err)
{
  char path[PATH_MAX];

  if (snprintf (path, sizeof path, "%s%s", dd_path, PGD_CHAIN_LOCK_SUFFIX) >= (int) sizeof path)
    return pgd_error (err, ENAMETOOLONG, "lock %s", dd_path);
  *fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (*fd < 0)
    return pgd_error (err, errno, "open %s", path);
  if (flock (*fd, LOCK_EX | LOCK_NB) < 0)
    {
      int e = errno;
      close (*fd);
      *fd = -1;
      if (e == EWOULDBLOCK)
        return pgd_error (err, EBUSY, "image %s is locked by another process", dd_path);
      return pgd_error (err, e, "lock %s", path);
    }
  return 0;
}

void
pgd_chain_free_list (char **files)
{
  if (files == NULL)
    return;
  for (char **p = files; *p; p++)
    free (*p);
  free (files);
}

int
pgd_chain_list (const char *dd_path, char ***files, bool *raw_base, struct pgd_err *err)
{
  /* libploop 1.15 copies about PATH_MAX bytes from the path (PLOOP.md §5.4 pitfall 1) */
  cleanup_free char *dd = calloc (1, 2 * PATH_MAX);
  struct ploop_disk_images_data *di = NULL;
  char **list = NULL, **out = NULL;
  size_t n = 0;
  int rc;

  if (dd == NULL)
    return pgd_error (err, ENOMEM, "read %s", dd_path);
  if (strlen (dd_path) >= PATH_MAX)
    return pgd_error (err, ENAMETOOLONG, "read %s", dd_path);
  strcpy (dd, dd_path);
  ploop_set_verbose_level (PLOOP_LOG_NOSTDOUT);
  rc = ploop_read_disk_descr (&di, dd);
  if (rc != 0)
    return pgd_error (err, EINVAL, "read %s: %s (rc %d)", dd_path, ploop_get_last_error (), rc);
  if (di->nimages < 1 || di->top_guid == NULL)
    {
      ploop_free_diskdescriptor (di);
      return pgd_error (err, EINVAL, "read %s: no images", dd_path);
    }
  list = make_images_list (di, di->top_guid, 0);
  if (raw_base)
    *raw_base = di->mode == PLOOP_RAW_MODE;
  ploop_free_diskdescriptor (di);
  if (list == NULL)
    return pgd_error (err, EINVAL, "read %s: cannot follow the snapshot chain", dd_path);
  while (list[n])
    n++;
  if (n == 0 || n > MAX_LEVELS)
    {
      ploop_free_array (list);
      return pgd_error (err, EINVAL, "read %s: chain of %zu deltas", dd_path, n);
    }
  out = calloc (n + 1, sizeof *out);
  for (size_t i = 0; out && i < n; i++)
    if ((out[i] = strdup (list[i])) == NULL)
      {
        pgd_chain_free_list (out);
        out = NULL;
      }
  ploop_free_array (list);
  if (out == NULL)
    return pgd_error (err, ENOMEM, "read %s", dd_path);
  *files = out;
  return 0;
}

int
pgd_chain_top_in_use (const char *dd_path, bool *in_use, struct pgd_err *err)
{
  char **files = NULL;
  struct pgd_delta_hdr h;
  size_t n = 0;
  int rc;

  if (pgd_chain_list (dd_path, &files, NULL, err) < 0)
    return -1;
  while (files[n])
    n++;
  rc = pgd_delta_read_header (files[n - 1], &h, err);
  pgd_chain_free_list (files);
  if (rc < 0)
    return -1;
  *in_use = h.in_use != 0;
  return 0;
}

/* ---- open -------------------------------------------------------------------- */

struct visit_ctx
{
  struct pgd_chain *c;
  unsigned level;
  uint64_t over; /* entries whose cluster does not fit idx_bits */
};

static void
visit_entry (void *p, uint32_t vc, uint64_t cluster)
{
  struct visit_ctx *v = p;
  struct pgd_chain *c = v->c;

  if (vc >= c->nclusters)
    return; /* a raw base longer than the disk */
  if (c->idx_bits < 64 && cluster + 1 >= (1ULL << c->idx_bits))
    {
      v->over++;
      return;
    }
  c->map[vc] = map_enc (c, v->level, cluster);
  if (v->level > 0)
    bit_set (c->lower, vc);
  else
    c->top_mapped++;
}

static unsigned
bits_for (unsigned n)
{
  unsigned b = 0;
  while ((1u << b) < n)
    b++;
  return b;
}

static int
open_levels (struct pgd_chain *c, char **files, bool raw_base, uint32_t *cluster_sectors,
             struct pgd_err *err)
{
  unsigned top = c->nlevels - 1; /* index in FILES */

  for (unsigned i = 0; i < c->nlevels; i++)
    {
      struct pgd_delta *d = &c->levels[top - i];
      bool is_top = i == top;
      bool raw = raw_base && i == 0;
      unsigned fl = is_top && !c->ro ? PGD_DELTA_RW : 0;

      if (raw && is_top)
        return pgd_error (err, ENOTSUP, "image with only a raw base %s is not supported",
                          files[i]);
      if (raw)
        {
          /* a raw base takes its cluster size from the first ploop delta above it */
          struct pgd_delta_hdr h;
          if (pgd_delta_read_header (files[1], &h, err) < 0)
            return -1;
          if (pgd_delta_open_raw (d, files[i], h.cluster_sectors, c->dflags, err) < 0)
            return -1;
        }
      else if (pgd_delta_open (d, files[i], fl | c->dflags, err) < 0)
        return -1;
      if (i == 0)
        *cluster_sectors = d->h.cluster_sectors;
      else if (d->h.cluster_sectors != *cluster_sectors)
        return pgd_error (err, EINVAL, "delta %s: cluster size %u differs from the base's %u",
                          files[i], d->h.cluster_sectors, *cluster_sectors);
      if (i > 0 && !c->levels[top - i + 1].raw && d->h.version != c->levels[top - i + 1].h.version)
        return pgd_error (err, EINVAL, "delta %s: chain mixes format versions", files[i]);
    }
  return 0;
}

static int
check_top (struct pgd_chain *c, struct pgd_err *err)
{
  struct pgd_delta *t = &c->levels[0];
  struct stat st;

  if (c->ro)
    return 0;
  if (fstat (t->fd, &st) < 0)
    return pgd_error (err, errno, "stat %s", t->path);
  if (st.st_nlink > 1)
    return pgd_error (err, EPERM, "top delta %s is shared (%lu links): serve it read-only",
                      t->path, (unsigned long) st.st_nlink);
  return 0;
}

static int
build_map (struct pgd_chain *c, struct pgd_err *err)
{
  struct pgd_delta *t = &c->levels[0];

  c->nclusters = t->h.bat_entries;
  c->size = t->h.size_sectors * PGD_SECTOR_SIZE;
  c->cb = t->cluster_bytes;
  c->idx_bits = 32 - bits_for (c->nlevels);
  c->map = calloc (c->nclusters ? c->nclusters : 1, sizeof *c->map);
  c->lower = calloc (c->nclusters / 64 + 1, sizeof *c->lower);
  c->npages = (uint32_t) ((PGD_DELTA_HDR_SIZE + 4ULL * c->nclusters + PGD_DELTA_BAT_PAGE - 1)
                          / PGD_DELTA_BAT_PAGE);
  c->dirty = calloc (c->npages / 64 + 1, sizeof *c->dirty);
  if (c->map == NULL || c->lower == NULL || c->dirty == NULL)
    return pgd_error (err, ENOMEM, "map of %u clusters for %s", c->nclusters, t->path);
  for (unsigned l = c->nlevels; l-- > 0;)
    {
      struct pgd_delta *d = &c->levels[l];
      struct visit_ctx v = { .c = c, .level = l };
      if (!d->raw && d->h.bat_entries > c->nclusters)
        return pgd_error (err, EINVAL, "delta %s is larger than the top %s", d->path, t->path);
      if (pgd_delta_scan_bat (d, visit_entry, &v, err) < 0)
        return -1;
      if (v.over)
        return pgd_error (err, EFBIG, "delta %s: file too large for a chain of %u levels",
                          d->path, c->nlevels);
    }
  c->alloc_head = t->file_clusters > t->header_clusters ? t->file_clusters : t->header_clusters;
  c->max_alloc = pgd_delta_max_cluster (t) + 1;
  if (c->idx_bits < 64 && c->max_alloc > (1ULL << c->idx_bits) - 1)
    c->max_alloc = (1ULL << c->idx_bits) - 1;
  return 0;
}

int
pgd_chain_open (struct pgd_chain **out, const char *dd_path, unsigned flags,
                struct pgd_err *err)
{
  struct pgd_chain *c = calloc (1, sizeof *c);
  char **files = NULL;
  bool raw_base = false;
  uint32_t cs = 0;
  size_t n = 0;

  if (c == NULL)
    return pgd_error (err, ENOMEM, "open %s", dd_path);
  c->lock_fd = -1;
  c->ro = flags & PGD_CHAIN_RO;
  c->dflags = (flags & PGD_CHAIN_BUFFERED) ? PGD_DELTA_BUFFERED : 0;
  pthread_mutex_init (&c->lock, NULL);
  if (pgd_chain_lock (dd_path, &c->lock_fd, err) < 0)
    goto fail;
  if (pgd_chain_list (dd_path, &files, &raw_base, err) < 0)
    goto fail;
  while (files[n])
    n++;
  c->nlevels = (unsigned) n;
  c->levels = calloc (n, sizeof *c->levels);
  if (c->levels == NULL)
    {
      pgd_error (err, ENOMEM, "open %s", dd_path);
      goto fail;
    }
  if (open_levels (c, files, raw_base, &cs, err) < 0 || check_top (c, err) < 0
      || build_map (c, err) < 0)
    goto fail;
  if (!c->ro)
    {
      if (posix_memalign ((void **) &c->bounce, IO_ALIGN, BOUNCE_BUF) != 0
          || posix_memalign ((void **) &c->page, IO_ALIGN, PGD_DELTA_BAT_PAGE) != 0)
        {
          pgd_error (err, ENOMEM, "open %s", dd_path);
          goto fail;
        }
      /* in use before the first write, durable (PLOOP.md §1.4) */
      if (pgd_delta_write_header (&c->levels[0], PGD_DELTA_IN_USE, c->levels[0].h.flags, err)
          < 0)
        goto fail;
    }
  pgd_chain_free_list (files);
  *out = c;
  return 0;

fail:
  pgd_chain_free_list (files);
  pgd_error_wrap (err, "open image %s", dd_path);
  pgd_chain_abandon (c);
  return -1;
}

void
pgd_chain_abandon (struct pgd_chain *c)
{
  if (c == NULL)
    return;
  for (unsigned i = 0; c->levels && i < c->nlevels; i++)
    pgd_delta_close (&c->levels[i]);
  free (c->levels);
  free (c->map);
  free (c->lower);
  free (c->dirty);
  free (c->bounce);
  free (c->page);
  if (c->lock_fd >= 0)
    close (c->lock_fd);
  pthread_mutex_destroy (&c->lock);
  free (c);
}

uint64_t
pgd_chain_size (const struct pgd_chain *c)
{
  return c->size;
}

uint32_t
pgd_chain_cluster_size (const struct pgd_chain *c)
{
  return (uint32_t) c->cb;
}

unsigned
pgd_chain_levels (const struct pgd_chain *c)
{
  return c->nlevels;
}

size_t
pgd_chain_mem (const struct pgd_chain *c)
{
  return (size_t) c->nclusters * 4 + (c->nclusters / 64 + 1) * 8 + (c->npages / 64 + 1) * 8
         + (c->bounce ? BOUNCE_BUF + PGD_DELTA_BAT_PAGE : 0) + c->nlevels * sizeof (struct pgd_delta);
}

void
pgd_chain_get_stats (const struct pgd_chain *c, struct pgd_chain_stats *s)
{
  s->allocs = __atomic_load_n (&c->st.allocs, __ATOMIC_RELAXED);
  s->cows = __atomic_load_n (&c->st.cows, __ATOMIC_RELAXED);
  s->unmaps = __atomic_load_n (&c->st.unmaps, __ATOMIC_RELAXED);
  s->flushes = __atomic_load_n (&c->st.flushes, __ATOMIC_RELAXED);
  s->bat_writes = __atomic_load_n (&c->st.bat_writes, __ATOMIC_RELAXED);
  s->dio = __atomic_load_n (&c->st.dio, __ATOMIC_RELAXED);
  s->buffered = __atomic_load_n (&c->st.buffered, __ATOMIC_RELAXED);
}

/* ---- plain I/O helpers ----------------------------------------------------------- */

/* Pick D's descriptor for an I/O and count which kind it was. */
static int
io_fd (struct pgd_chain *c, const struct pgd_delta *d, const void *buf, uint64_t len,
       uint64_t off)
{
  if (pgd_delta_dio_ok (d, buf, len, off))
    {
      stat_add (&c->st.dio, 1);
      return d->dfd;
    }
  stat_add (&c->st.buffered, 1);
  return d->fd;
}

/* Read LEN bytes at OFF; past the end of the file (a raw base's last cluster) read zeros. */
static int
pread_zero (struct pgd_chain *c, const struct pgd_delta *d, char *buf, size_t len, uint64_t off,
            struct pgd_err *err)
{
  while (len > 0)
    {
      int fd = io_fd (c, d, buf, len, off);
      ssize_t n = pread (fd, buf, len, (off_t) off);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return pgd_error (err, errno, "read %s at %llu", d->path, (unsigned long long) off);
      if (n == 0)
        {
          memset (buf, 0, len);
          return 0;
        }
      buf += n;
      len -= n;
      off += n;
    }
  return 0;
}

static int
pwrite_full (struct pgd_chain *c, const struct pgd_delta *d, const char *buf, size_t len,
             uint64_t off, struct pgd_err *err)
{
  while (len > 0)
    {
      int fd = io_fd (c, d, buf, len, off);
      ssize_t n = pwrite (fd, buf, len, (off_t) off);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return pgd_error (err, errno, "write %s at %llu", d->path, (unsigned long long) off);
      buf += n;
      len -= n;
      off += n;
    }
  return 0;
}

/* A pending pwritev to the top: contiguous from START, LEN bytes in IOV[0..N). */
struct batch
{
  struct iovec iov[BATCH_IOV];
  int n;
  uint64_t start;
  uint64_t len;
};

static int
batch_flush (struct pgd_chain *c, struct batch *b, struct pgd_err *err)
{
  const struct pgd_delta *t = &c->levels[0];
  struct iovec *iov = b->iov;
  int n = b->n;
  uint64_t off = b->start;

  while (n > 0)
    {
      bool dio = t->dfd >= 0 && off % t->dio_off_align == 0;
      for (int i = 0; dio && i < n; i++)
        dio = pgd_delta_dio_ok (t, iov[i].iov_base, iov[i].iov_len, 0);
      stat_add (dio ? &c->st.dio : &c->st.buffered, 1);
      ssize_t w = pwritev (dio ? t->dfd : t->fd, iov, n, (off_t) off);
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0)
        return pgd_error (err, errno, "write %s at %llu", t->path, (unsigned long long) off);
      off += w;
      while (n > 0 && (size_t) w >= iov->iov_len)
        {
          w -= iov->iov_len;
          iov++;
          n--;
        }
      if (n > 0)
        {
          iov->iov_base = (char *) iov->iov_base + w;
          iov->iov_len -= w;
        }
    }
  b->start += b->len;
  b->len = 0;
  b->n = 0;
  return 0;
}

/* Append LEN bytes from P at file offset OFF to the batch (flushing it when full or when
   OFF does not continue it). */
static int
batch_add (struct pgd_chain *c, struct batch *b, const void *p, size_t len, uint64_t off,
           struct pgd_err *err)
{
  if (len == 0)
    return 0;
  if (b->n > 0 && (b->n == BATCH_IOV || off != b->start + b->len))
    if (batch_flush (c, b, err) < 0)
      return -1;
  if (b->n == 0)
    {
      b->start = off;
      b->len = 0;
    }
  b->iov[b->n].iov_base = (void *) p;
  b->iov[b->n].iov_len = len;
  b->n++;
  b->len += len;
  return 0;
}

static int
batch_add_zeros (struct pgd_chain *c, struct batch *b, size_t len, uint64_t off,
                 struct pgd_err *err)
{
  while (len > 0)
    {
      size_t n = len < ZERO_BUF ? len : ZERO_BUF;
      if (batch_add (c, b, zero_buf, n, off, err) < 0)
        return -1;
      len -= n;
      off += n;
    }
  return 0;
}

/* Copy LEN bytes of lower delta L at SRC into the top at DST (under the chain lock),
   through the bounce buffer: direct I/O both ways when aligned. */
static int
copy_lower (struct pgd_chain *c, const struct pgd_delta *l, uint64_t src, uint64_t dst,
            uint64_t len, struct pgd_err *err)
{
  const struct pgd_delta *t = &c->levels[0];

  while (len > 0)
    {
      size_t n = len < BOUNCE_BUF ? len : BOUNCE_BUF;
      if (pread_zero (c, l, c->bounce, n, src, err) < 0
          || pwrite_full (c, t, c->bounce, n, dst, err) < 0)
        return -1;
      src += n;
      dst += n;
      len -= n;
    }
  return 0;
}

/* ---- read -------------------------------------------------------------------------- */

int
pgd_chain_read (struct pgd_chain *c, void *buf, size_t len, uint64_t off, struct pgd_err *err)
{
  char *p = buf;

  if (off > c->size || len > c->size - off)
    return pgd_error (err, EINVAL, "read past the end of the disk (%llu+%zu)",
                      (unsigned long long) off, len);
  while (len > 0)
    {
      uint64_t vc = off / c->cb, co = off % c->cb;
      uint32_t v = map_get (c, vc);
      size_t n = c->cb - co < len ? c->cb - co : len;

      /* extend over following clusters that continue the same run */
      for (uint64_t k = 1; n < len; k++)
        {
          uint32_t w = map_get (c, vc + k);
          if (v == 0 ? w != 0 : !continues (c, v, w, k))
            break;
          n += c->cb < len - n ? c->cb : len - n;
        }
      if (v == 0)
        memset (p, 0, n);
      else
        {
          const struct pgd_delta *d = &c->levels[map_level (c, v)];
          if (pread_zero (c, d, p, n, map_cluster (c, v) * c->cb + co, err) < 0)
            return -1;
        }
      p += n;
      off += n;
      len -= n;
    }
  return 0;
}

/* ---- write ------------------------------------------------------------------------- */

static void
mark_dirty (struct pgd_chain *c, uint64_t vc)
{
  bit_set (c->dirty, (vc + HDR_ENTRIES) / BAT_ENTRIES_PER_PAGE);
}

/* Allocate top clusters for the run of clusters starting at OFF that the top does not
   own, write them whole, then publish their map entries. Consumes at most
   BATCH_CLUSTERS clusters; returns the bytes of the request consumed, or -1. */
static int64_t
write_alloc (struct pgd_chain *c, const char *buf, size_t len, uint64_t off,
             struct pgd_err *err)
{
  const struct pgd_delta *t = &c->levels[0];
  struct batch b = { .n = 0 };
  uint64_t vcs[BATCH_CLUSTERS], blks[BATCH_CLUSTERS];
  unsigned nalloc = 0, ncow = 0;
  size_t done = 0;
  PGD_SCOPED_LOCK (&c->lock);

  while (done < len && nalloc < BATCH_CLUSTERS)
    {
      uint64_t vc = (off + done) / c->cb, co = (off + done) % c->cb;
      size_t n = c->cb - co < len - done ? c->cb - co : len - done;
      uint32_t v = map_get (c, vc);
      uint64_t blk = c->alloc_head, pos;

      if (top_owns (c, v))
        break; /* allocated meanwhile: the caller overwrites it in place */
      if (blk >= c->max_alloc)
        {
          if (nalloc == 0)
            return pgd_error (err, ENOSPC, "delta %s: no room for another cluster", t->path);
          break;
        }
      pos = blk * c->cb;
      if (n < c->cb && v != 0)
        {
          /* copy on write: the parts of the cluster the request does not cover */
          const struct pgd_delta *l = &c->levels[map_level (c, v)];
          uint64_t src = map_cluster (c, v) * c->cb;
          if (batch_flush (c, &b, err) < 0 || copy_lower (c, l, src, pos, co, err) < 0
              || copy_lower (c, l, src + co + n, pos + co + n, c->cb - co - n, err) < 0)
            return -1;
          ncow++;
        }
      else if (batch_add_zeros (c, &b, co, pos, err) < 0)
        return -1;
      if (batch_add (c, &b, buf + done, n, pos + co, err) < 0)
        return -1;
      if (!(n < c->cb && v != 0) && batch_add_zeros (c, &b, c->cb - co - n, pos + co + n, err) < 0)
        return -1;
      c->alloc_head++;
      vcs[nalloc] = vc;
      blks[nalloc] = blk;
      nalloc++;
      done += n;
    }
  if (batch_flush (c, &b, err) < 0)
    return -1;
  /* the data is written: only now may the map (and later the BAT) point at it */
  for (unsigned i = 0; i < nalloc; i++)
    {
      map_set (c, vcs[i], map_enc (c, 0, blks[i]));
      mark_dirty (c, vcs[i]);
    }
  c->top_mapped += nalloc;
  __atomic_store_n (&c->data_dirty, 1, __ATOMIC_RELEASE);
  stat_add (&c->st.allocs, nalloc);
  stat_add (&c->st.cows, ncow);
  return (int64_t) done;
}

int
pgd_chain_write (struct pgd_chain *c, const void *buf, size_t len, uint64_t off,
                 struct pgd_err *err)
{
  const char *p = buf;

  if (c->ro)
    return pgd_error (err, EROFS, "write to a read-only image");
  if (off > c->size || len > c->size - off)
    return pgd_error (err, ENOSPC, "write past the end of the disk (%llu+%zu)",
                      (unsigned long long) off, len);
  while (len > 0)
    {
      uint64_t vc = off / c->cb, co = off % c->cb;
      uint32_t v = map_get (c, vc);
      size_t n = c->cb - co < len ? c->cb - co : len;

      if (top_owns (c, v))
        {
          for (uint64_t k = 1; n < len && continues (c, v, map_get (c, vc + k), k); k++)
            n += c->cb < len - n ? c->cb : len - n;
          if (pwrite_full (c, &c->levels[0], p, n, map_cluster (c, v) * c->cb + co, err) < 0)
            return -1;
          __atomic_store_n (&c->data_dirty, 1, __ATOMIC_RELEASE);
        }
      else
        {
          int64_t w = write_alloc (c, p, len, off, err);
          if (w < 0)
            return -1;
          n = (size_t) w;
        }
      p += n;
      off += n;
      len -= n;
    }
  return 0;
}

/* ---- discard / write zeros ------------------------------------------------------- */

/* Drop VC from the top when only the top maps it; false when that does not apply. */
static bool
unmap_cluster (struct pgd_chain *c, uint64_t vc)
{
  PGD_SCOPED_LOCK (&c->lock);
  uint32_t v = map_get (c, vc);

  if (!top_owns (c, v) || bit_test (c->lower, vc))
    return false;
  map_set (c, vc, 0);
  mark_dirty (c, vc);
  c->top_mapped--;
  c->trim = true;
  stat_add (&c->st.unmaps, 1);
  return true;
}

int
pgd_chain_zero (struct pgd_chain *c, uint64_t off, uint64_t len, struct pgd_err *err)
{
  if (c->ro)
    return pgd_error (err, EROFS, "discard on a read-only image");
  if (off > c->size || len > c->size - off)
    return pgd_error (err, ENOSPC, "discard past the end of the disk (%llu+%llu)",
                      (unsigned long long) off, (unsigned long long) len);
  while (len > 0)
    {
      uint64_t vc = off / c->cb, co = off % c->cb;
      uint64_t n = c->cb - co < len ? c->cb - co : len;
      uint32_t v = map_get (c, vc);

      if (v != 0 && !(n == c->cb && unmap_cluster (c, vc)))
        for (uint64_t z = 0; z < n;)
          {
            size_t piece = n - z < ZERO_BUF ? n - z : ZERO_BUF;
            if (pgd_chain_write (c, zero_buf, piece, off + z, err) < 0)
              return -1;
            z += piece;
          }
      off += n;
      len -= n;
    }
  return 0;
}

/* ---- flush and close ------------------------------------------------------------- */

static int
write_bat_page (struct pgd_chain *c, uint32_t page, struct pgd_err *err)
{
  struct pgd_delta *t = &c->levels[0];
  uint32_t *ent = c->page;
  uint64_t first = (uint64_t) page * BAT_ENTRIES_PER_PAGE;

  memset (ent, 0, PGD_DELTA_BAT_PAGE);
  for (uint64_t i = 0; i < BAT_ENTRIES_PER_PAGE; i++)
    {
      uint64_t idx = first + i;
      if (idx < HDR_ENTRIES)
        continue;
      if (idx - HDR_ENTRIES >= c->nclusters)
        break;
      uint32_t v = map_get (c, idx - HDR_ENTRIES);
      if (top_owns (c, v))
        ent[i] = htole32 (pgd_delta_entry_for (t, map_cluster (c, v)));
    }
  if (page == 0)
    memcpy (ent, t->hdr_raw, PGD_DELTA_HDR_SIZE);
  if (pwrite_full (c, t, (const char *) ent, PGD_DELTA_BAT_PAGE, first * 4, err) < 0)
    return -1;
  stat_add (&c->st.bat_writes, 1);
  return 0;
}

/* After the BAT no longer points at them, drop the unmapped clusters at the end of the
   top (what a read-write `ploop check` calls trimming the tail). */
static int
trim_tail (struct pgd_chain *c, struct pgd_err *err)
{
  struct pgd_delta *t = &c->levels[0];
  uint64_t head = t->header_clusters;

  c->trim = false;
  for (uint64_t vc = 0; vc < c->nclusters; vc++)
    {
      uint32_t v = map_get (c, vc);
      if (top_owns (c, v) && map_cluster (c, v) + 1 > head)
        head = map_cluster (c, v) + 1;
    }
  if (head >= c->alloc_head)
    return 0;
  if (ftruncate (t->fd, (off_t) (head * c->cb)) < 0)
    return pgd_error (err, errno, "truncate %s", t->path);
  c->alloc_head = head;
  return 0;
}

static int
flush_locked (struct pgd_chain *c, struct pgd_err *err)
{
  struct pgd_delta *t = &c->levels[0];
  uint32_t flags = t->h.flags;
  bool pages = false;

  if (c->top_mapped > 0)
    flags &= ~PGD_DELTA_CIF_EMPTY;
  else
    flags |= PGD_DELTA_CIF_EMPTY;
  if (flags != t->h.flags)
    {
      pgd_delta_hdr_set (t, t->h.in_use, flags);
      bit_set (c->dirty, 0);
    }
  for (uint32_t w = 0; w <= c->npages / 64; w++)
    pages |= c->dirty[w] != 0;
  if (!__atomic_exchange_n (&c->data_dirty, 0, __ATOMIC_ACQ_REL) && !pages)
    return 0;
  if (fdatasync (t->fd) < 0)
    return pgd_error (err, errno, "fdatasync %s", t->path);
  if (!pages)
    goto done;
  for (uint32_t pg = 0; pg < c->npages; pg++)
    if (bit_test (c->dirty, pg))
      {
        if (write_bat_page (c, pg, err) < 0)
          return -1;
        c->dirty[pg / 64] &= ~(1ULL << (pg % 64));
      }
  if (fdatasync (t->fd) < 0)
    return pgd_error (err, errno, "fdatasync %s", t->path);
  if (c->trim && trim_tail (c, err) < 0)
    return -1;
done:
  stat_add (&c->st.flushes, 1);
  return 0;
}

int
pgd_chain_flush (struct pgd_chain *c, struct pgd_err *err)
{
  if (c->ro)
    return 0;
  PGD_SCOPED_LOCK (&c->lock);
  return flush_locked (c, err);
}

int
pgd_chain_close (struct pgd_chain *c, struct pgd_err *err)
{
  int rc = 0;

  if (c == NULL)
    return 0;
  if (!c->ro)
    {
      struct pgd_delta *t = &c->levels[0];
      if (pgd_chain_flush (c, err) < 0
          || pgd_delta_write_header (t, 0, t->h.flags, err) < 0)
        rc = pgd_error_wrap (err, "close %s", t->path);
    }
  pgd_chain_abandon (c);
  return rc;
}

/* ---- seek -------------------------------------------------------------------------- */

int
pgd_chain_seek (struct pgd_chain *c, uint64_t off, bool data, uint64_t *out,
                struct pgd_err *err)
{
  if (off >= c->size)
    return pgd_error (err, ENXIO, "seek past the end of the disk");
  for (uint64_t vc = off / c->cb; vc < c->nclusters; vc++)
    if ((map_get (c, vc) != 0) == data)
      {
        uint64_t at = vc * c->cb;
        *out = at > off ? at : off;
        if (*out >= c->size)
          break;
        return 0;
      }
  if (data)
    return pgd_error (err, ENXIO, "no data after %llu", (unsigned long long) off);
  *out = c->size;
  return 0;
}
