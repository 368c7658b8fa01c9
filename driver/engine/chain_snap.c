/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Online snapshot of a served chain (PLOOP.md §1.4 "snapshot", §6.2): the top is
   flushed and closed as a kernel snapshot closes it (in use cleared, CIF_Empty right,
   read-only from then on) and a new empty delta becomes the top, all while the gate is
   held so that no I/O sees the levels half switched. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain_priv.h"
#include "util.h"

/* The new top TOP must fit on C: a private, empty v1/v2 delta of the same geometry. */
static int
check_new_top (const struct pgd_chain *c, const struct pgd_delta *top, struct pgd_err *err)
{
  const struct pgd_delta *old = &c->levels[0];
  struct stat st;

  if (fstat (top->fd, &st) < 0)
    return pgd_error (err, errno, "stat %s", top->path);
  if (st.st_nlink != 1)
    return pgd_error (err, EPERM, "new top %s is shared (%lu links)", top->path,
                      (unsigned long)st.st_nlink);
  if (top->h.version != old->h.version || top->h.cluster_sectors != old->h.cluster_sectors
      || top->h.bat_entries != old->h.bat_entries || top->h.size_sectors != old->h.size_sectors)
    return pgd_error (err, EINVAL, "new top %s does not match the geometry of %s", top->path,
                      old->path);
  if (top->file_clusters > top->header_clusters)
    return pgd_error (err, EINVAL, "new top %s is not empty", top->path);
  return 0;
}

/* Every entry of the map must still fit once the level takes one more bit. */
static int
check_bits (const struct pgd_chain *c, unsigned bits, struct pgd_err *err)
{
  if (bits >= c->idx_bits)
    return 0;
  for (uint64_t vc = 0; vc < c->nclusters; vc++)
    {
      uint32_t v = map_get (c, vc);
      if (v != 0 && map_cluster (c, v) + 1 >= (1ULL << bits))
        return pgd_error (err, EFBIG, "delta %s: file too large for a chain of %u levels",
                          c->levels[map_level (c, v)].path, c->nlevels + 1);
    }
  return 0;
}

/* Flush the top and close it as a clean close does, keeping it open read-only. */
static int
close_top (struct pgd_chain *c, struct pgd_err *err)
{
  struct pgd_delta *t = &c->levels[0];

  /* clusters fallocated ahead hold nothing: cut them off, as at close */
  if (c->prealloc_end > c->alloc_head && ftruncate (t->fd, (off_t)(c->alloc_head * c->cb)) == 0)
    c->prealloc_end = c->alloc_head;
  if (c->prealloc_end > c->alloc_head)
    c->trim = true;
  if (pgd_chain_flush_gated (c, err) < 0)
    return -1;
  return pgd_delta_write_header (t, 0, t->h.flags, err);
}

/* Make NEW (open, marked in use) the top of C: every level moves one down, the map is
   encoded again, the top's allocation state starts afresh. Gate held for writing. */
static void
push_level (struct pgd_chain *c, struct pgd_delta *levels, const struct pgd_delta *new,
            unsigned bits)
{
  uint64_t mask = c->idx_bits >= 32 ? UINT32_MAX : (1ULL << c->idx_bits) - 1;

  memmove (levels + 1, levels, c->nlevels * sizeof *levels);
  levels[0] = *new;
  levels[1].writable = false;
  c->levels = levels;
  for (uint64_t vc = 0; vc < c->nclusters; vc++)
    {
      uint32_t v = c->map[vc];
      if (v == 0)
        continue;
      unsigned level = c->idx_bits >= 32 ? 0 : v >> c->idx_bits;
      uint64_t cluster = (v & mask) - 1;
      c->map[vc] = (uint32_t)(((uint64_t)(level + 1) << bits) | (cluster + 1));
      bit_set (c->lower, vc);
    }
  c->idx_bits = bits;
  c->nlevels++;
  memset (c->dirty, 0, (c->npages / 64 + 1) * sizeof *c->dirty);
  c->top_mapped = 0;
  c->top_high = 0;
  c->trim = c->rescan = false;
  c->nfreed = 0;
  c->freed_dirty = false;
  c->alloc_head
      = new->file_clusters > new->header_clusters ? new->file_clusters : new->header_clusters;
  c->prealloc_end = c->open_head = c->alloc_head;
  c->max_alloc = pgd_delta_max_cluster (new) + 1;
  if (c->idx_bits < 64 && c->max_alloc > (1ULL << c->idx_bits) - 1)
    c->max_alloc = (1ULL << c->idx_bits) - 1;
}

int
pgd_chain_snapshot (struct pgd_chain *c, const char *top_path, const char *dd_path,
                    struct pgd_err *err)
{
  struct pgd_delta top = { .fd = -1, .dfd = -1 };
  int lock_fd = -1;

  if (c->ro)
    return pgd_error (err, EROFS, "snapshot of a read-only image");
  if (c->nlevels >= PGD_CHAIN_MAX_LEVELS)
    return pgd_error (err, EMLINK, "snapshot: the chain has %u levels already", c->nlevels);
  unsigned bits = pgd_chain_idx_bits (c->nlevels + 1);
  pthread_rwlock_wrlock (&c->gate);
  /* everything that can fail without touching the served image comes first */
  struct pgd_delta *levels = realloc (c->levels, (c->nlevels + 1) * sizeof *levels);
  if (levels == NULL)
    {
      pgd_error (err, ENOMEM, "snapshot");
      goto fail;
    }
  c->levels = levels;
  if (pgd_chain_refuse_broken (c, err) < 0 || check_bits (c, bits, err) < 0
      || pgd_delta_open (&top, top_path, PGD_DELTA_RW | c->dflags, err) < 0
      || check_new_top (c, &top, err) < 0 || pgd_chain_lock (dd_path, &lock_fd, err) < 0)
    goto fail;
  /* the old top becomes the parent's image for good: durable and closed first */
  if (close_top (c, err) < 0)
    goto fail;
  if (pgd_delta_write_header (&top, PGD_DELTA_IN_USE, top.h.flags, err) < 0)
    {
      /* the old top goes on serving: in use again, or the chain refuses writes */
      struct pgd_err e2;
      struct pgd_delta *t = &c->levels[0];
      if (pgd_delta_write_header (t, PGD_DELTA_IN_USE, t->h.flags, &e2) < 0)
        __atomic_store_n (&c->broken, EIO, __ATOMIC_RELEASE);
      goto fail;
    }
  push_level (c, levels, &top, bits);
  close (c->lock_fd);
  c->lock_fd = lock_fd;
  pthread_rwlock_unlock (&c->gate);
  return 0;

fail:
  pthread_rwlock_unlock (&c->gate);
  pgd_delta_close (&top);
  if (lock_fd >= 0)
    close (lock_fd);
  return pgd_error_wrap (err, "snapshot onto %s", top_path);
}
