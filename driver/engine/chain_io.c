/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Data path of the delta chain: reads that fall through the merged map, writes that
   append whole clusters to the top (copy on write) before publishing their map entries,
   discard (PLOOP.md §2.1-2.2). Locking is described in chain.c. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "chain_priv.h"
#include "util.h"

#define ZERO_BUF (64 * 1024) /* source of zero padding for partial appends */
#define BATCH_IOV 256        /* iovecs gathered into one pwritev */
#define BATCH_CLUSTERS 64    /* clusters allocated per lock hold */

static char zero_buf[ZERO_BUF] __attribute__ ((aligned (PGD_CHAIN_IO_ALIGN)));

/* ---- plain I/O helpers ----------------------------------------------------------- */

/* Pick D's descriptor for an I/O and count which kind it was. */
static int
io_fd (struct pgd_chain *c, const struct pgd_delta *d, const void *buf, uint64_t len, uint64_t off)
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
      ssize_t n = pread (fd, buf, len, (off_t)off);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return pgd_error (err, errno, "read %s at %llu", d->path, (unsigned long long)off);
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

/* The write pgd_chain_inject_fault chose: let the first ALLOW bytes of IOV[0..N) land at
   OFF (through the page cache), then fail as a disk error would. */
static int
injected_fault (const struct pgd_delta *d, const struct iovec *iov, int n, uint64_t allow,
                uint64_t off, struct pgd_err *err)
{
  uint64_t at = off;

  for (int i = 0; i < n && allow > 0; i++)
    {
      size_t piece = iov[i].iov_len < allow ? iov[i].iov_len : allow;
      if (pwrite (d->fd, iov[i].iov_base, piece, (off_t)at) != (ssize_t)piece)
        break; /* the error below is what the caller sees either way */
      at += piece;
      allow -= piece;
    }
  return pgd_error (err, EIO, "write %s at %llu: injected fault", d->path, (unsigned long long)off);
}

int
pgd_chain_pwrite (struct pgd_chain *c, const struct pgd_delta *d, const char *buf, size_t len,
                  uint64_t off, struct pgd_err *err)
{
  while (len > 0)
    {
      int fd = io_fd (c, d, buf, len, off);
      uint64_t allow = fault_write_allows (c, len);
      if (allow < len)
        {
          struct iovec v = { .iov_base = (void *)buf, .iov_len = len };
          return injected_fault (d, &v, 1, allow, off, err);
        }
      ssize_t n = pwrite (fd, buf, len, (off_t)off);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return pgd_error (err, errno, "write %s at %llu", d->path, (unsigned long long)off);
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
      uint64_t left = b->start + b->len - off;
      uint64_t allow = fault_write_allows (c, left);
      if (allow < left)
        return injected_fault (t, iov, n, allow, off, err);
      ssize_t w = pwritev (dio ? t->dfd : t->fd, iov, n, (off_t)off);
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0)
        return pgd_error (err, errno, "write %s at %llu", t->path, (unsigned long long)off);
      off += w;
      while (n > 0 && (size_t)w >= iov->iov_len)
        {
          w -= iov->iov_len;
          iov++;
          n--;
        }
      if (n > 0)
        {
          iov->iov_base = (char *)iov->iov_base + w;
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
  b->iov[b->n].iov_base = (void *)p;
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

static pthread_key_t bounce_key;
static pthread_once_t bounce_once = PTHREAD_ONCE_INIT;

static void
bounce_key_make (void)
{
  pthread_key_create (&bounce_key, free);
}

/* This thread's copy-on-write buffer: allocated on its first copy, freed when it exits,
   so that copies of different writers run side by side outside the chain lock. */
static char *
thread_bounce (struct pgd_err *err)
{
  static __thread char *b;

  if (b != NULL)
    return b;
  pthread_once (&bounce_once, bounce_key_make);
  if (posix_memalign ((void **)&b, PGD_CHAIN_IO_ALIGN, PGD_CHAIN_BOUNCE) != 0)
    {
      b = NULL;
      pgd_error (err, ENOMEM, "copy-on-write buffer");
      return NULL;
    }
  pthread_setspecific (bounce_key, b);
  return b;
}

int
pgd_chain_thread_prepare (struct pgd_chain *c, struct pgd_err *err)
{
  if (c->ro)
    return 0;
  char *b = thread_bounce (err);
  if (b == NULL)
    return -1;
  memset (b, 0, PGD_CHAIN_BOUNCE);
  return 0;
}

/* Copy LEN bytes of lower delta L at SRC into the top at DST through this thread's
   bounce buffer: direct I/O both ways when aligned. */
static int
copy_lower (struct pgd_chain *c, const struct pgd_delta *l, uint64_t src, uint64_t dst,
            uint64_t len, struct pgd_err *err)
{
  const struct pgd_delta *t = &c->levels[0];
  char *bounce = thread_bounce (err);

  if (bounce == NULL)
    return -1;
  while (len > 0)
    {
      size_t n = len < PGD_CHAIN_BOUNCE ? len : PGD_CHAIN_BOUNCE;
      if (pread_zero (c, l, bounce, n, src, err) < 0
          || pgd_chain_pwrite (c, t, bounce, n, dst, err) < 0)
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
                      (unsigned long long)off, len);
  PGD_CHAIN_GATE (c);
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

/* Top clusters reserved for one allocating write: VCS[i] gets file cluster BLKS[i],
   over what LOWER[i] mapped (0 or a lower level). The fresh ones, FRESH_FIRST up to
   FRESH_END, came from the allocation head; the others from the freed list. */
struct reservation
{
  uint64_t vcs[BATCH_CLUSTERS], blks[BATCH_CLUSTERS];
  uint32_t lower[BATCH_CLUSTERS];
  unsigned n;
  size_t done; /* bytes of the request the clusters cover */
  uint64_t fresh_first, fresh_end;
};

/* Extend the top past the allocation head (chain lock held) by what this session
   appended, at most PGD_CHAIN_PREALLOC, as unwritten extents: they read as zeros, every
   append writes its clusters whole, and a crash leaves them as orphans at the tail,
   which a repair trims (PLOOP.md §2.3). Best effort: without it the appends extend the
   file themselves. */
static void
prealloc (struct pgd_chain *c)
{
  const struct pgd_delta *t = &c->levels[0];
  uint64_t appended = c->alloc_head - c->open_head;
  uint64_t ahead = (PGD_CHAIN_PREALLOC + c->cb - 1) / c->cb;
  uint64_t end;

  if (appended * c->cb < PGD_CHAIN_PREALLOC_START)
    return;
  end = c->alloc_head + (appended < ahead ? appended : ahead);
  if (end > c->max_alloc)
    end = c->max_alloc;
  if (end <= c->alloc_head
      || fallocate (t->fd, 0, (off_t)(c->prealloc_end * c->cb),
                    (off_t)((end - c->prealloc_end) * c->cb))
             < 0)
    {
      c->prealloc_end = c->alloc_head; /* the appends extend the file */
      return;
    }
  c->prealloc_end = end;
}

/* Reserve (chain lock held) top clusters for the run of clusters starting at OFF that
   the top does not own and no other writer has reserved, at most BATCH_CLUSTERS. When
   the first one is being written by another writer, or a flush drains the writes in
   flight, wait. 0 clusters when the first one is the top's after all (the caller
   overwrites it in place); -1 on ENOSPC. */
static int
reserve (struct pgd_chain *c, size_t len, uint64_t off, struct reservation *r, struct pgd_err *err)
{
  PGD_SCOPED_LOCK (&c->lock);

  while (c->draining || bit_test (c->pending, off / c->cb))
    pthread_cond_wait (&c->published, &c->lock);
  r->n = 0;
  r->done = 0;
  r->fresh_first = r->fresh_end = c->alloc_head;
  while (r->done < len && r->n < BATCH_CLUSTERS)
    {
      uint64_t vc = (off + r->done) / c->cb, co = (off + r->done) % c->cb;
      size_t n = c->cb - co < len - r->done ? c->cb - co : len - r->done;
      uint32_t v = map_get (c, vc);
      uint64_t blk;

      if (top_owns (c, v) || bit_test (c->pending, vc))
        break; /* allocated meanwhile, or being allocated by another writer */
      if (c->nfreed > 0)
        blk = c->freed[--c->nfreed];
      else if (c->alloc_head < c->max_alloc)
        blk = c->alloc_head++;
      else if (r->n == 0)
        return pgd_error (err, ENOSPC, "delta %s: no room for another cluster", c->levels[0].path);
      else
        break;
      bit_set (c->pending, vc);
      r->vcs[r->n] = vc;
      r->blks[r->n] = blk;
      r->lower[r->n] = v;
      r->n++;
      r->done += n;
    }
  r->fresh_end = c->alloc_head;
  if (r->n > 0)
    c->inflight++;
  if (c->alloc_head > c->prealloc_end)
    prealloc (c);
  return 0;
}

/* Write the reserved clusters whole (outside the chain lock): the request's bytes, the
   rest of each cluster copied from the lower level that maps it, or zeros. */
static int
write_reserved (struct pgd_chain *c, const char *buf, uint64_t off, const struct reservation *r,
                struct pgd_err *err)
{
  struct batch b = { .n = 0 };
  size_t done = 0;
  unsigned ncow = 0;

  for (unsigned i = 0; i < r->n; i++)
    {
      uint64_t co = (off + done) % c->cb, pos = r->blks[i] * c->cb;
      size_t n = c->cb - co < r->done - done ? c->cb - co : r->done - done;
      uint32_t v = r->lower[i];
      bool cow = n < c->cb && v != 0;

      if (cow)
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
      if (!cow && batch_add_zeros (c, &b, c->cb - co - n, pos + co + n, err) < 0)
        return -1;
      done += n;
    }
  if (batch_flush (c, &b, err) < 0)
    return -1;
  stat_add (&c->st.cows, ncow);
  return 0;
}

/* Write zeros over the whole top cluster BLK. */
static int
zero_cluster (struct pgd_chain *c, uint64_t blk, struct pgd_err *err)
{
  for (uint64_t z = 0; z < c->cb; z += ZERO_BUF)
    {
      size_t n = c->cb - z < ZERO_BUF ? c->cb - z : ZERO_BUF;
      if (pgd_chain_pwrite (c, &c->levels[0], zero_buf, n, blk * c->cb + z, err) < 0)
        return -1;
    }
  return 0;
}

/* Drop the kept clusters that end the file from the list and the allocation head, so
   that the next append starts there again, and cut off whatever part of them (and of
   the preallocation) reached the file. */
static void
shrink_tail (struct pgd_chain *c)
{
  const struct pgd_delta *t = &c->levels[0];
  uint64_t old = c->alloc_head;
  struct stat st;

  for (unsigned i = 0; i < c->nfreed;)
    if (c->freed[i] + 1 == c->alloc_head)
      {
        c->alloc_head--;
        c->freed[i] = c->freed[--c->nfreed];
        i = 0;
      }
    else
      i++;
  if (c->alloc_head == old && c->prealloc_end <= old)
    return;
  if (fstat (t->fd, &st) < 0 || (uint64_t)st.st_size <= c->alloc_head * c->cb)
    return;
  if (ftruncate (t->fd, (off_t)(c->alloc_head * c->cb)) < 0)
    c->trim = true; /* the next flush tries again */
  else
    c->prealloc_end = c->alloc_head;
}

/* A failed append publishes none of its clusters: they are kept for reuse; those that
   end the file (once every append after them failed too, or there was none) are cut
   off, the others zeroed at the next flush. Left behind as they are, they would be a
   hole inside the delta, or a partial cluster at its end, both of which ploop_check
   rejects in a delta closed cleanly; and a full disk would fail that flush. */
static void
give_back (struct pgd_chain *c, const struct reservation *r)
{
  for (unsigned i = 0; i < r->n; i++)
    if (c->nfreed < PGD_CHAIN_FREE_MAX)
      c->freed[c->nfreed++] = r->blks[i];
    else
      {
        struct pgd_err ignored;
        (void)zero_cluster (c, r->blks[i], &ignored); /* an orphan, but whole */
      }
  shrink_tail (c);
  c->freed_dirty = c->nfreed > 0;
}

/* Publish the written clusters of R in the map (then in the BAT at the next flush), or
   give them back when WRITTEN is false; either way they are no longer pending. */
static void
finish (struct pgd_chain *c, const struct reservation *r, bool written)
{
  PGD_SCOPED_LOCK (&c->lock);

  for (unsigned i = 0; i < r->n; i++)
    {
      bit_clear (c->pending, r->vcs[i]);
      if (!written)
        continue;
      /* the data is written: only now may the map (and later the BAT) point at it */
      map_set (c, r->vcs[i], map_enc (c, 0, r->blks[i]));
      mark_dirty (c, r->vcs[i]);
      if (r->blks[i] + 1 > c->top_high)
        c->top_high = r->blks[i] + 1;
    }
  if (written)
    {
      c->top_mapped += r->n;
      __atomic_store_n (&c->data_dirty, 1, __ATOMIC_RELEASE);
      stat_add (&c->st.allocs, r->n);
    }
  else
    give_back (c, r);
  c->inflight--;
  pthread_cond_broadcast (&c->published);
}

int
pgd_chain_zero_freed (struct pgd_chain *c, struct pgd_err *err)
{
  for (unsigned i = 0; i < c->nfreed; i++)
    if (zero_cluster (c, c->freed[i], err) < 0)
      return -1;
  c->freed_dirty = false;
  return 0;
}

/* Allocate top clusters for the run of clusters starting at OFF that the top does not
   own, write them whole, then publish their map entries. Consumes at most
   BATCH_CLUSTERS clusters; returns the bytes of the request consumed (0: the first
   cluster turned out to be the top's), or -1. */
static int64_t
write_alloc (struct pgd_chain *c, const char *buf, size_t len, uint64_t off, struct pgd_err *err)
{
  struct reservation r;

  if (reserve (c, len, off, &r, err) < 0)
    return -1;
  if (r.n == 0)
    return 0;
  int rc = write_reserved (c, buf, off, &r, err);
  finish (c, &r, rc == 0);
  return rc < 0 ? -1 : (int64_t)r.done;
}

/* pgd_chain_write with the gate held. */
static int
chain_write (struct pgd_chain *c, const void *buf, size_t len, uint64_t off, struct pgd_err *err)
{
  const char *p = buf;

  if (c->ro)
    return pgd_error (err, EROFS, "write to a read-only image");
  if (pgd_chain_refuse_broken (c, err) < 0)
    return -1;
  if (off > c->size || len > c->size - off)
    return pgd_error (err, ENOSPC, "write past the end of the disk (%llu+%zu)",
                      (unsigned long long)off, len);
  while (len > 0)
    {
      uint64_t vc = off / c->cb, co = off % c->cb;
      uint32_t v = map_get (c, vc);
      size_t n = c->cb - co < len ? c->cb - co : len;

      if (top_owns (c, v))
        {
          for (uint64_t k = 1; n < len && continues (c, v, map_get (c, vc + k), k); k++)
            n += c->cb < len - n ? c->cb : len - n;
          if (pgd_chain_pwrite (c, &c->levels[0], p, n, map_cluster (c, v) * c->cb + co, err) < 0)
            return -1;
          __atomic_store_n (&c->data_dirty, 1, __ATOMIC_RELEASE);
        }
      else
        {
          int64_t w = write_alloc (c, p, len, off, err);
          if (w < 0)
            return -1;
          n = (size_t)w;
        }
      p += n;
      off += n;
      len -= n;
    }
  return 0;
}

int
pgd_chain_write (struct pgd_chain *c, const void *buf, size_t len, uint64_t off,
                 struct pgd_err *err)
{
  PGD_CHAIN_GATE (c);
  return chain_write (c, buf, len, off, err);
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
  c->rescan = true;
  stat_add (&c->st.unmaps, 1);
  return true;
}

int
pgd_chain_zero (struct pgd_chain *c, uint64_t off, uint64_t len, struct pgd_err *err)
{
  if (c->ro)
    return pgd_error (err, EROFS, "discard on a read-only image");
  if (pgd_chain_refuse_broken (c, err) < 0)
    return -1;
  if (off > c->size || len > c->size - off)
    return pgd_error (err, ENOSPC, "discard past the end of the disk (%llu+%llu)",
                      (unsigned long long)off, (unsigned long long)len);
  PGD_CHAIN_GATE (c);
  while (len > 0)
    {
      uint64_t vc = off / c->cb, co = off % c->cb;
      uint64_t n = c->cb - co < len ? c->cb - co : len;
      uint32_t v = map_get (c, vc);

      if (v != 0 && !(n == c->cb && unmap_cluster (c, vc)))
        for (uint64_t z = 0; z < n;)
          {
            size_t piece = n - z < ZERO_BUF ? n - z : ZERO_BUF;
            if (chain_write (c, zero_buf, piece, off + z, err) < 0)
              return -1;
            z += piece;
          }
      off += n;
      len -= n;
    }
  return 0;
}
