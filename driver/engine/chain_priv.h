/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Internals of the delta chain shared by chain.c (open, flush, close, seek) and
   chain_io.c (read, write, discard). Not for other modules. */
#ifndef PGD_CHAIN_PRIV_H
#define PGD_CHAIN_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "chain.h"
#include "delta.h"

#define PGD_CHAIN_BOUNCE (256 * 1024) /* copy-on-write buffer (direct I/O, no page cache) */
#define PGD_CHAIN_IO_ALIGN 4096       /* buffers usable for direct I/O */
#define PGD_CHAIN_FREE_MAX 512        /* clusters of failed appends kept for reuse */
/* Once a session has appended PGD_CHAIN_PREALLOC_START, appends are fallocated ahead
   by as much as it appended, up to PGD_CHAIN_PREALLOC: ext4 runs a direct write that
   extends the file, or that fills a hole, under the inode lock held exclusively
   (measured: a third of the server's waits), and one into allocated blocks under the
   shared lock. Small writers (a container's -init layer) never preallocate: the space
   is taken from the disk until the image is closed. */
#define PGD_CHAIN_PREALLOC (32ULL << 20)
#define PGD_CHAIN_PREALLOC_START (4ULL << 20)
#define BAT_ENTRIES_PER_PAGE (PGD_DELTA_BAT_PAGE / 4)
#define HDR_ENTRIES (PGD_DELTA_HDR_SIZE / 4) /* vc i is u32 index i + 16 */

struct pgd_chain
{
  unsigned nlevels;
  struct pgd_delta *levels; /* [0] = top */
  bool ro;
  unsigned dflags; /* PGD_DELTA_BUFFERED or 0 */
  int lock_fd;
  uint64_t size;      /* virtual bytes */
  uint64_t cb;        /* cluster bytes */
  uint32_t nclusters; /* map entries = top's m_Size */
  unsigned idx_bits;
  uint32_t *map;
  uint64_t *lower; /* bitmap: some level below the top maps vc */
  uint64_t *dirty; /* bitmap of dirty BAT pages of the top */
  uint32_t npages;
  pthread_rwlock_t gate;    /* read by every I/O and flush, written by a top switch (the
                               levels and the map's encoding change under it) */
  pthread_mutex_t lock;     /* reservation and publication of clusters, discard, flush */
  pthread_cond_t published; /* a reservation ended (its vcs are no longer pending) */
  uint64_t *pending;        /* bitmap: vc has a top cluster reserved, its data being written */
  unsigned inflight;        /* reservations whose data is being written outside the lock */
  bool draining;            /* a flush waits for them: no new reservation meanwhile */
  uint64_t freed[PGD_CHAIN_FREE_MAX]; /* clusters of failed appends, reused first */
  unsigned nfreed;
  bool freed_dirty;      /* some freed cluster may be partly written: zero it at flush */
  uint64_t alloc_head;   /* next file cluster of the top */
  uint64_t prealloc_end; /* file clusters the top's size covers (fallocated past alloc_head) */
  uint64_t open_head;    /* alloc_head at open: what this session appended is the rest */
  uint64_t max_alloc;    /* first file cluster that may not be allocated */
  uint64_t top_mapped;   /* entries the top maps (CIF_Empty) */
  int data_dirty;        /* written since the last flush (atomic) */
  bool trim;             /* clusters were unmapped: cut orphans off the tail at flush */
  uint64_t top_high;     /* 1 + the highest file cluster the top maps, unless rescan */
  bool rescan;           /* clusters were unmapped since top_high was computed */
  uint32_t *page;        /* one BAT page being written (aligned) */
  int broken;            /* errno of a failed fdatasync of the top: writes refused (atomic) */
  struct pgd_chain_stats st;
  uint64_t fault_write; /* stats.writes value whose write fails, 0 = none (tests) */
  uint64_t fault_sync;  /* stats.syncs value whose fdatasync fails, 0 = none (tests) */
  bool fault_torn;      /* the failing write lets its first half through */
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
  return (uint32_t)(((uint64_t)level << c->idx_bits) | (cluster + 1));
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

static inline void
bit_clear (uint64_t *b, uint64_t i)
{
  b[i / 64] &= ~(1ULL << (i % 64));
}

static inline void
stat_add (uint64_t *counter, uint64_t n)
{
  __atomic_add_fetch (counter, n, __ATOMIC_RELAXED);
}

/* Mark the BAT page holding VC's entry dirty (chain lock held). */
static inline void
mark_dirty (struct pgd_chain *c, uint64_t vc)
{
  bit_set (c->dirty, (vc + HDR_ENTRIES) / BAT_ENTRIES_PER_PAGE);
}

/* Count a write to the top. LEN when it goes through; when it is the one
   pgd_chain_inject_fault chose, the bytes that land before it fails with EIO: none, or
   for a torn write its first half in whole sectors. */
static inline uint64_t
fault_write_allows (struct pgd_chain *c, uint64_t len)
{
  uint64_t n = __atomic_add_fetch (&c->st.writes, 1, __ATOMIC_RELAXED);

  if (__builtin_expect (c->fault_write == 0, 1) || n != c->fault_write)
    return len;
  return c->fault_torn ? len / 2 / PGD_SECTOR_SIZE * PGD_SECTOR_SIZE : 0;
}

/* Hold the gate for an I/O or flush (shared) until the end of the scope. */
void pgd_chain_gate_release (pthread_rwlock_t **gate);
#define PGD_CHAIN_GATE(c)                                                                          \
  __attribute__ ((cleanup (pgd_chain_gate_release))) pthread_rwlock_t *gate_held_                  \
      = (pthread_rwlock_rdlock (&(c)->gate), &(c)->gate)

/* pgd_chain_flush with the gate held. */
int pgd_chain_flush_gated (struct pgd_chain *c, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Bits of a map entry that hold the file cluster, in a chain of NLEVELS levels. */
unsigned pgd_chain_idx_bits (unsigned nlevels);

/* 0, or -1 (EIO) once an fdatasync of the top has failed: see sync_top in chain.c. */
int pgd_chain_refuse_broken (struct pgd_chain *c, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Write zeros over the clusters of failed appends kept for reuse (chain lock held, no
   reservation in flight), so that none is left partly written inside the file. */
int pgd_chain_zero_freed (struct pgd_chain *c, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Write LEN bytes of BUF at OFF into delta D, through O_DIRECT when aligned. */
int pgd_chain_pwrite (struct pgd_chain *c, const struct pgd_delta *d, const char *buf, size_t len,
                      uint64_t off, struct pgd_err *err) __attribute__ ((warn_unused_result));

#endif
