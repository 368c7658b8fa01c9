/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The delta chain behind one served image (PLOOP.md §2).

   Map: one u32 per virtual cluster, 0 = no level maps it, otherwise
   (level << idx_bits) | (file cluster + 1), level 0 being the top. A lookup is one
   atomic load, so readers never see half an update. The top's own BAT is not kept
   apart: its entries are the map entries of level 0, and BAT pages are rebuilt from
   the map when they are written back.

   Locking: reads and in-place overwrites of clusters the top already owns take no
   lock. An allocating write reserves its top clusters under the mutex (the vcs marked
   pending, so a second writer of the same vc waits), writes their data outside it, and
   takes it again to publish the map entries. Discard and flush run under the mutex; a
   flush first waits for the reservations in flight (and holds new ones back), so it
   never writes a BAT entry published after its first fdatasync began nor one that
   lies past a cluster still half written; entries are published only after their
   data is written: data is durable before the entry that points at it. */
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

#include "chain_priv.h"
#include "delta.h"
#include "util.h"

/* ---- image description and lock ---------------------------------------------- */

int
pgd_chain_lock (const char *dd_path, int *fd, struct pgd_err *err)
{
  char path[PATH_MAX];

  if (snprintf (path, sizeof path, "%s%s", dd_path, PGD_CHAIN_LOCK_SUFFIX) >= (int)sizeof path)
    return pgd_error (err, ENAMETOOLONG, "lock %s", dd_path);
  *fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (*fd < 0)
    return pgd_error (err, errno, "open %s", path);
  /* A thread of the plugin that forks (a server spawn, mkfs) while another holds a
     short lock on this file hands the lock to the child until it execs or exits:
     retry for about 2 s before calling the image busy. */
  unsigned waited_ms = 0, step = 1;
  int rc;
  while ((rc = flock (*fd, LOCK_EX | LOCK_NB)) < 0 && errno == EWOULDBLOCK && waited_ms < 2000)
    {
      usleep (step * 1000);
      waited_ms += step;
      step = step < 64 ? step * 2 : 64;
    }
  if (rc < 0)
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
    {
      c->top_mapped++;
      if (cluster + 1 > c->top_high)
        c->top_high = cluster + 1;
    }
}

static unsigned
bits_for (unsigned n)
{
  unsigned b = 0;
  while ((1u << b) < n)
    b++;
  return b;
}

unsigned
pgd_chain_idx_bits (unsigned nlevels)
{
  return 32 - bits_for (nlevels);
}

void
pgd_chain_gate_release (pthread_rwlock_t **gate)
{
  if (*gate)
    pthread_rwlock_unlock (*gate);
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
        return pgd_error (err, ENOTSUP, "image with only a raw base %s is not supported", files[i]);
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
    return pgd_error (err, EPERM, "top delta %s is shared (%lu links): serve it read-only", t->path,
                      (unsigned long)st.st_nlink);
  return 0;
}

static int
build_map (struct pgd_chain *c, struct pgd_err *err)
{
  struct pgd_delta *t = &c->levels[0];

  c->nclusters = t->h.bat_entries;
  c->size = t->h.size_sectors * PGD_SECTOR_SIZE;
  c->cb = t->cluster_bytes;
  c->idx_bits = pgd_chain_idx_bits (c->nlevels);
  c->map = calloc (c->nclusters ? c->nclusters : 1, sizeof *c->map);
  c->lower = calloc (c->nclusters / 64 + 1, sizeof *c->lower);
  c->npages = (uint32_t)((PGD_DELTA_HDR_SIZE + 4ULL * c->nclusters + PGD_DELTA_BAT_PAGE - 1)
                         / PGD_DELTA_BAT_PAGE);
  c->dirty = calloc (c->npages / 64 + 1, sizeof *c->dirty);
  c->pending = calloc (c->nclusters / 64 + 1, sizeof *c->pending);
  if (c->map == NULL || c->lower == NULL || c->dirty == NULL || c->pending == NULL)
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
        return pgd_error (err, EFBIG, "delta %s: file too large for a chain of %u levels", d->path,
                          c->nlevels);
    }
  c->alloc_head = t->file_clusters > t->header_clusters ? t->file_clusters : t->header_clusters;
  c->prealloc_end = c->open_head = c->alloc_head;
  c->max_alloc = pgd_delta_max_cluster (t) + 1;
  if (c->idx_bits < 64 && c->max_alloc > (1ULL << c->idx_bits) - 1)
    c->max_alloc = (1ULL << c->idx_bits) - 1;
  return 0;
}

int
pgd_chain_open_files (struct pgd_chain **out, const char *dd_path, char *const *files,
                      bool raw_base, unsigned flags, struct pgd_err *err)
{
  struct pgd_chain *c = calloc (1, sizeof *c);
  uint32_t cs = 0;
  size_t n = 0;

  if (c == NULL)
    return pgd_error (err, ENOMEM, "open %s", dd_path);
  c->lock_fd = -1;
  c->ro = flags & PGD_CHAIN_RO;
  c->dflags = (flags & PGD_CHAIN_BUFFERED) ? PGD_DELTA_BUFFERED : 0;
  pthread_mutex_init (&c->lock, NULL);
  pthread_cond_init (&c->published, NULL);
  /* a switch waiting for the gate holds new I/O back instead of starving */
  pthread_rwlockattr_t ga;
  pthread_rwlockattr_init (&ga);
  pthread_rwlockattr_setkind_np (&ga, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init (&c->gate, &ga);
  pthread_rwlockattr_destroy (&ga);
  if (pgd_chain_lock (dd_path, &c->lock_fd, err) < 0)
    goto fail;
  while (files[n])
    n++;
  if (n == 0 || n > PGD_CHAIN_MAX_LEVELS)
    {
      pgd_error (err, EINVAL, "chain of %zu deltas", n);
      goto fail;
    }
  c->nlevels = (unsigned)n;
  c->levels = calloc (n, sizeof *c->levels);
  if (c->levels == NULL)
    {
      pgd_error (err, ENOMEM, "open %s", dd_path);
      goto fail;
    }
  if (open_levels (c, (char **)files, raw_base, &cs, err) < 0 || check_top (c, err) < 0
      || build_map (c, err) < 0)
    goto fail;
  if (!c->ro)
    {
      if (posix_memalign ((void **)&c->page, PGD_CHAIN_IO_ALIGN, PGD_DELTA_BAT_PAGE) != 0)
        {
          pgd_error (err, ENOMEM, "open %s", dd_path);
          goto fail;
        }
      /* in use before the first write, durable (PLOOP.md §1.4) */
      if (pgd_delta_write_header (&c->levels[0], PGD_DELTA_IN_USE, c->levels[0].h.flags, err) < 0)
        goto fail;
    }
  *out = c;
  return 0;

fail:
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
  free (c->pending);
  free (c->page);
  if (c->lock_fd >= 0)
    close (c->lock_fd);
  pthread_mutex_destroy (&c->lock);
  pthread_cond_destroy (&c->published);
  pthread_rwlock_destroy (&c->gate);
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
  return (uint32_t)c->cb;
}

unsigned
pgd_chain_levels (const struct pgd_chain *c)
{
  return c->nlevels;
}

size_t
pgd_chain_mem (const struct pgd_chain *c)
{
  return (size_t)c->nclusters * 4 + 2 * (c->nclusters / 64 + 1) * 8 + (c->npages / 64 + 1) * 8
         + (c->page ? PGD_DELTA_BAT_PAGE : 0) + c->nlevels * sizeof (struct pgd_delta);
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
  s->writes = __atomic_load_n (&c->st.writes, __ATOMIC_RELAXED);
  s->syncs = __atomic_load_n (&c->st.syncs, __ATOMIC_RELAXED);
}

void
pgd_chain_inject_fault (struct pgd_chain *c, enum pgd_chain_fault kind, unsigned nth)
{
  if (kind == PGD_CHAIN_FAULT_SYNC)
    c->fault_sync = nth ? __atomic_load_n (&c->st.syncs, __ATOMIC_RELAXED) + nth : 0;
  else
    {
      c->fault_write = nth ? __atomic_load_n (&c->st.writes, __ATOMIC_RELAXED) + nth : 0;
      c->fault_torn = kind == PGD_CHAIN_FAULT_TORN;
    }
}

/* ---- flush and close ------------------------------------------------------------- */

static int
write_bat_page (struct pgd_chain *c, uint32_t page, struct pgd_err *err)
{
  struct pgd_delta *t = &c->levels[0];
  uint32_t *ent = c->page;
  uint64_t first = (uint64_t)page * BAT_ENTRIES_PER_PAGE;

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
  if (pgd_chain_pwrite (c, t, (const char *)ent, PGD_DELTA_BAT_PAGE, first * 4, err) < 0)
    return -1;
  stat_add (&c->st.bat_writes, 1);
  return 0;
}

/* After the BAT no longer points at them, drop the unmapped clusters at the end of the
   top (what a read-write `ploop check` calls trimming the tail), and whatever a failed
   append left past the allocation head. */
static int
trim_tail (struct pgd_chain *c, struct pgd_err *err)
{
  struct pgd_delta *t = &c->levels[0];
  uint64_t head = t->header_clusters;
  struct stat st;

  /* the whole map only after an unmap: at 1 TiB it is 16 M entries (30 ms) */
  if (c->rescan)
    {
      c->top_high = 0;
      for (uint64_t vc = 0; vc < c->nclusters; vc++)
        {
          uint32_t v = map_get (c, vc);
          if (top_owns (c, v) && map_cluster (c, v) + 1 > c->top_high)
            c->top_high = map_cluster (c, v) + 1;
        }
      c->rescan = false;
    }
  if (c->top_high > head)
    head = c->top_high;
  if (head < c->alloc_head)
    c->alloc_head = head;
  unsigned kept = 0;
  for (unsigned i = 0; i < c->nfreed; i++)
    if (c->freed[i] < c->alloc_head)
      c->freed[kept++] = c->freed[i];
  c->nfreed = kept;
  if (fstat (t->fd, &st) < 0)
    return pgd_error (err, errno, "stat %s", t->path);
  if ((uint64_t)st.st_size > c->alloc_head * c->cb
      && ftruncate (t->fd, (off_t)(c->alloc_head * c->cb)) < 0)
    return pgd_error (err, errno, "truncate %s", t->path);
  c->prealloc_end = c->alloc_head;
  c->trim = false;
  return 0;
}

/* fdatasync the top (or fail as pgd_chain_inject_fault chose). A failure breaks the
   chain for good: the kernel may have dropped the dirty pages it could not write, and
   a later fdatasync would then succeed without them, so a later flush could publish
   BAT entries over data that is gone. Writes and flushes are refused from then on, and
   the top stays marked in use, so that the next open goes through a check. */
static int
sync_top (struct pgd_chain *c, struct pgd_err *err)
{
  struct pgd_delta *t = &c->levels[0];
  uint64_t n = __atomic_add_fetch (&c->st.syncs, 1, __ATOMIC_RELAXED);
  bool injected = __builtin_expect (c->fault_sync != 0, 0) && n == c->fault_sync;
  int e = 0;

  if (injected)
    e = EIO;
  else if (fdatasync (t->fd) < 0)
    e = errno;
  if (e == 0)
    return 0;
  __atomic_store_n (&c->broken, e, __ATOMIC_RELEASE);
  return pgd_error (err, e, "fdatasync %s%s", t->path, injected ? ": injected fault" : "");
}

int
pgd_chain_refuse_broken (struct pgd_chain *c, struct pgd_err *err)
{
  int e = __atomic_load_n (&c->broken, __ATOMIC_ACQUIRE);

  if (e == 0)
    return 0;
  return pgd_error (err, EIO,
                    "%s: an earlier fdatasync failed (%s); writes are refused until "
                    "the image is checked",
                    c->levels[0].path, strerror (e));
}

static int
flush_locked (struct pgd_chain *c, struct pgd_err *err)
{
  struct pgd_delta *t = &c->levels[0];
  uint32_t flags = t->h.flags;
  bool pages = false;

  if (pgd_chain_refuse_broken (c, err) < 0)
    return -1;
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
  if (c->freed_dirty && pgd_chain_zero_freed (c, err) < 0)
    return -1;
  if (!__atomic_exchange_n (&c->data_dirty, 0, __ATOMIC_ACQ_REL) && !pages && !c->trim)
    return 0;
  /* the data first: durable before any BAT entry that points at it */
  if (sync_top (c, err) < 0)
    return -1;
  if (pages)
    {
      for (uint32_t pg = 0; pg < c->npages; pg++)
        if (bit_test (c->dirty, pg))
          {
            if (write_bat_page (c, pg, err) < 0)
              return -1;
            c->dirty[pg / 64] &= ~(1ULL << (pg % 64));
          }
      if (sync_top (c, err) < 0)
        return -1;
    }
  /* no BAT page is dirty: nothing on disk points at the clusters trimmed now; not while
     appends are in flight: their clusters lie past every published one */
  if (c->trim && c->inflight == 0 && trim_tail (c, err) < 0)
    return -1;
  stat_add (&c->st.flushes, 1);
  return 0;
}

int
pgd_chain_flush (struct pgd_chain *c, struct pgd_err *err)
{
  if (c->ro)
    return 0;
  PGD_CHAIN_GATE (c);
  return pgd_chain_flush_gated (c, err);
}

int
pgd_chain_flush_gated (struct pgd_chain *c, struct pgd_err *err)
{
  PGD_SCOPED_LOCK (&c->lock);
  /* no append half written below one the BAT will name: a crash then leaves only whole
     orphans at the tail, which the repair trims (PLOOP.md §2.3) */
  c->draining = true;
  while (c->inflight > 0)
    pthread_cond_wait (&c->published, &c->lock);
  int rc = flush_locked (c, err);
  c->draining = false;
  pthread_cond_broadcast (&c->published);
  return rc;
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
      /* clusters fallocated ahead are cut off first (nothing is in flight at close, so
         nothing lies there): on a full disk the flush and the status need that space */
      if (c->prealloc_end > c->alloc_head && ftruncate (t->fd, (off_t)(c->alloc_head * c->cb)) == 0)
        c->prealloc_end = c->alloc_head;
      if (c->prealloc_end > c->alloc_head)
        c->trim = true;
      /* after a failed flush the top stays in use: the next open checks it */
      if (pgd_chain_flush (c, err) < 0 || pgd_delta_write_header (t, 0, t->h.flags, err) < 0)
        rc = pgd_error_wrap (err, "close %s", t->path);
    }
  pgd_chain_abandon (c);
  return rc;
}

/* ---- seek -------------------------------------------------------------------------- */

int
pgd_chain_seek (struct pgd_chain *c, uint64_t off, bool data, uint64_t *out, struct pgd_err *err)
{
  if (off >= c->size)
    return pgd_error (err, ENXIO, "seek past the end of the disk");
  PGD_CHAIN_GATE (c);
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
    return pgd_error (err, ENXIO, "no data after %llu", (unsigned long long)off);
  *out = c->size;
  return 0;
}
