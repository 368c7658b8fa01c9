/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The delta chain: reads, writes, copy on write through chains of 1, 3, 4 and 127
   deltas with 32 KiB to 1 MiB clusters, checked against an in-memory model, libploop's
   and QEMU's checkers and a merged copy converted by qemu-img (PLOOP.md §8.3). The
   power-cut model is in test_powercut.c. */
#include "ploop_fixture.h"

#include <pthread.h>

#include "engine/chain.h"
#include "engine/delta.h"

#define DISK (64ULL << 20)

static char dir[PATH_MAX], dd[PATH_MAX];
static uint64_t disk = DISK; /* the model's virtual size; a test may make it smaller */
static unsigned char *model;
static unsigned rng_state;

static void
setup (void)
{
  fx_tmpdir (dir, sizeof dir, "chain");
  snprintf (dd, sizeof dd, "%s/" FX_DD, dir);
  model = calloc (1, DISK);
  cr_assert_not_null (model);
  rng_state = 12345;
}

static void
teardown (void)
{
  free (model);
  fx_sh ("rm -rf '%s'", dir);
}

TestSuite (chain, .init = setup, .fini = teardown);

static unsigned
rnd (void)
{
  rng_state = rng_state * 1103515245u + 12345u;
  return rng_state >> 8;
}

static struct pgd_chain *
open_chain (unsigned flags)
{
  struct pgd_chain *c = NULL;
  struct pgd_err err = { 0 };

  cr_assert_eq (pgd_chain_open (&c, dd, flags, &err), 0, "%s", err.msg);
  return c;
}

static void
close_chain (struct pgd_chain *c)
{
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_chain_close (c, &err), 0, "%s", err.msg);
}

static void
put (struct pgd_chain *c, uint64_t off, size_t len, unsigned seed)
{
  struct pgd_err err = { 0 };
  unsigned char *buf = NULL;

  /* page-aligned memory: aligned requests take the O_DIRECT path */
  cr_assert_eq (posix_memalign ((void **)&buf, 4096, len), 0);
  fx_pattern (buf, len, off, seed);
  cr_assert_eq (pgd_chain_write (c, buf, len, off, &err), 0, "write %llu+%zu: %s",
                (unsigned long long)off, len, err.msg);
  memcpy (model + off, buf, len);
  free (buf);
}

static void
zero (struct pgd_chain *c, uint64_t off, uint64_t len)
{
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_chain_zero (c, off, len, &err), 0, "%s", err.msg);
  memset (model + off, 0, len);
}

/* The whole disk read through C equals the model: odd-sized chunks (buffered I/O), then
   aligned ones (direct I/O). */
static void
verify_chunks (struct pgd_chain *c, const char *when, size_t chunk)
{
  unsigned char *buf = NULL;
  struct pgd_err err = { 0 };

  cr_assert_eq (posix_memalign ((void **)&buf, 4096, chunk), 0);
  cr_assert_eq (pgd_chain_size (c), disk);
  for (uint64_t off = 0; off < disk; off += chunk)
    {
      size_t n = disk - off < chunk ? disk - off : chunk;
      cr_assert_eq (pgd_chain_read (c, buf, n, off, &err), 0, "%s", err.msg);
      if (memcmp (buf, model + off, n) != 0)
        {
          size_t i = 0;
          while (buf[i] == model[off + i])
            i++;
          cr_assert_fail ("%s: byte %llu differs (got %02x want %02x)", when,
                          (unsigned long long)(off + i), buf[i], model[off + i]);
        }
    }
  free (buf);
}

static void
verify (struct pgd_chain *c, const char *when)
{
  verify_chunks (c, when, (1 << 20) + 4567);
  verify_chunks (c, when, 1 << 20);
}

static void
model_sha256 (char *out, size_t len)
{
  char path[PATH_MAX];
  FILE *f;

  snprintf (path, sizeof path, "%s/model.raw", dir);
  f = fopen (path, "w");
  cr_assert_not_null (f);
  cr_assert_eq (fwrite (model, 1, disk, f), disk);
  cr_assert_eq (fclose (f), 0);
  cr_assert_eq (fx_sh_out (out, len, "sha256sum '%s' | cut -d' ' -f1", path), 0);
  unlink (path);
}

static void
random_writes (struct pgd_chain *c, unsigned n, uint64_t cb, unsigned seed)
{
  for (unsigned i = 0; i < n; i++)
    {
      uint64_t off = (uint64_t)rnd () % disk;
      size_t len = 1 + rnd () % (3 * cb);
      if (rnd () % 4 == 0)
        off -= off % cb; /* cluster aligned */
      if (rnd () % 4 == 0)
        len = cb;
      if (rnd () % 2 == 0)
        {
          /* sector/page aligned, as a loop device sends them */
          off -= off % 4096;
          len = (len + 4095) / 4096 * 4096;
        }
      if (off + len > disk)
        len = disk - off;
      put (c, off, len, seed + i);
    }
}

static void
three_levels (unsigned cluster_sectors)
{
  uint64_t cb = cluster_sectors * 512ULL;
  struct pgd_chain_stats st;
  char want[65], got[65];
  struct pgd_chain *c;

  fx_create_image (dir, DISK, cluster_sectors);
  c = open_chain (0);
  cr_expect_eq (pgd_chain_levels (c), 1);
  cr_expect_eq (pgd_chain_cluster_size (c), cb);
  put (c, 0, 4096, 1);
  put (c, cb / 2 - 100, 3 * cb, 2);
  put (c, 5 * cb, cb, 3);
  put (c, DISK - 777, 777, 4);
  random_writes (c, 60, cb, 100);
  verify (c, "base");
  close_chain (c);

  fx_snapshot (dir);
  c = open_chain (0);
  put (c, 100, 100, 10);        /* COW inside a lower cluster */
  put (c, 5 * cb + 10, 10, 11); /* COW of the full lower cluster */
  put (c, 7 * cb, cb, 12);      /* whole cluster, nothing below */
  put (c, 7 * cb + 5, 5, 13);   /* then in place */
  random_writes (c, 60, cb, 200);
  verify (c, "level 2");
  pgd_chain_get_stats (c, &st);
  cr_expect_gt (st.cows, 0);
  close_chain (c);

  fx_snapshot (dir);
  c = open_chain (0);
  cr_expect_eq (pgd_chain_levels (c), 3);
  random_writes (c, 60, cb, 300);
  put (c, 20 * cb + 1, 2 * cb - 2, 14);
  zero (c, 20 * cb, 2 * cb); /* top-only clusters: dropped from the BAT */
  zero (c, 0, cb);           /* lower data: zeros written */
  zero (c, cb + 3, 1000);
  verify (c, "level 3");
  pgd_chain_get_stats (c, &st);
  cr_expect_gt (st.unmaps, 0);
  cr_expect_gt (st.dio, 0, "no direct I/O");
  cr_expect_gt (st.buffered, 0, "no buffered fallback");
  close_chain (c);

  /* read-only, after a clean close, and through the checkers */
  c = open_chain (PGD_CHAIN_RO);
  verify (c, "reopened read-only");
  close_chain (c);
  fx_check_deltas (dir);
  model_sha256 (want, sizeof want);
  fx_merged_sha256 (dir, got, sizeof got);
  cr_expect_str_eq (got, want, "merged copy differs from the model");
}

Test (chain, three_levels_32k) { three_levels (64); }

Test (chain, three_levels_1m) { three_levels (2048); }

Test (chain, four_levels_256k_merged_matches)
{
  char want[65], got[65];
  struct pgd_chain *c;

  fx_create_image (dir, DISK, 512);
  for (int l = 0; l < 4; l++)
    {
      if (l > 0)
        fx_snapshot (dir);
      c = open_chain (0);
      random_writes (c, 40, 256 * 1024, 1000 * l);
      close_chain (c);
    }
  c = open_chain (PGD_CHAIN_RO);
  verify (c, "4 levels");
  close_chain (c);
  fx_check_deltas (dir);
  model_sha256 (want, sizeof want);
  fx_merged_sha256 (dir, got, sizeof got);
  cr_expect_str_eq (got, want);
}

/* A chain of exactly one delta: whole, partial (zero-filled) and unaligned writes, and
   discards, read back through a fresh open and through a qemu-img conversion. */
Test (chain, one_delta_reads_model)
{
  char want[65], got[65];
  struct pgd_chain *c;

  fx_create_image (dir, DISK, 64);
  c = open_chain (0);
  random_writes (c, 80, 32768, 500);
  put (c, 3 * 32768 + 17, 100, 501); /* partial: the rest of the cluster reads as zeros */
  zero (c, 0, 2 * 32768);
  zero (c, 10 * 32768 + 5, 7000);
  close_chain (c);
  c = open_chain (PGD_CHAIN_RO);
  cr_expect_eq (pgd_chain_levels (c), 1);
  verify (c, "one delta");
  close_chain (c);
  fx_check_deltas (dir);
  model_sha256 (want, sizeof want);
  fx_merged_sha256 (dir, got, sizeof got);
  cr_expect_str_eq (got, want);
}

/* PLOOP.md says an image holds at most 128 deltas, but libploop 1.15 refuses to snapshot
   a DD that already has 127 images ("The maximum number of snapshots (126) has been
   reached", see test_image's clone_refuses_past_127_deltas): the deepest chain it makes,
   and so the deepest one we serve, has 127 deltas. */
#define DEEPEST 127

/* What level L (1 = base) writes into its own top: a whole cluster, a partial write
   (copy on write when a lower level holds the cluster, zero-filled when none does), an
   unaligned write across two clusters, part of the cluster level L/2 wrote whole (an
   overwrite that falls through half the chain), and now and then a discard. */
static void
level_writes (struct pgd_chain *c, unsigned l, uint64_t cb, uint64_t *whole)
{
  uint64_t nc = disk / cb, vc = rnd () % nc;

  whole[l] = rnd () % nc;
  put (c, whole[l] * cb, cb, 10 * l);
  put (c, vc * cb + rnd () % (cb / 2), 1 + rnd () % (cb / 2), 10 * l + 1);
  put (c, (rnd () % (nc - 1)) * cb + cb / 2 + rnd () % 512, cb, 10 * l + 2);
  if (l > 1)
    put (c, whole[l / 2] * cb + 4096, 8192, 10 * l + 3);
  if (l % 10 == 9)
    zero (c, (rnd () % nc) * cb, cb);
}

/* Reads through the deepest chain equal the model, level after level; writes into the
   127th delta leave the 126 below it byte-identical. 4 MiB of 32 KiB clusters keeps it
   to seconds. */
Test (chain, deepest_chain_127_deltas)
{
  const uint64_t cb = 32768;
  uint64_t whole[DEEPEST + 1];
  struct pgd_chain_stats st;
  char want[65], got[65];
  struct pgd_chain *c;

  disk = 4ULL << 20;
  fx_create_image (dir, disk, 64);
  for (unsigned l = 1; l <= DEEPEST; l++)
    {
      if (l == DEEPEST) /* the 126 lower deltas, before the top goes on them */
        cr_assert_eq (fx_sh ("cd '%s' && sha256sum root.hdd* > lower.sha256", dir), 0);
      if (l > 1)
        fx_snapshot (dir);
      c = open_chain (0);
      cr_assert_eq (pgd_chain_levels (c), l);
      level_writes (c, l, cb, whole);
      if (l == 1 || l % 16 == 0 || l == DEEPEST)
        verify (c, "while written");
      pgd_chain_get_stats (c, &st);
      cr_expect (l < 8 || st.cows > 0, "level %u copied nothing on write", l);
      close_chain (c);
    }
  cr_expect_eq (fx_sh ("cd '%s' && sha256sum --quiet -c lower.sha256", dir), 0,
                "a write into the top changed a lower delta");
  cr_expect_eq (fx_sh ("cd '%s' && [ $(ls root.hdd* | wc -l) -eq %d ]", dir, DEEPEST), 0);
  fx_sh ("rm -f '%s/lower.sha256'", dir);
  c = open_chain (PGD_CHAIN_RO);
  cr_expect_eq (pgd_chain_levels (c), DEEPEST);
  verify (c, "127 deltas, reopened");
  close_chain (c);
  fx_check_deltas (dir);
  model_sha256 (want, sizeof want);
  fx_merged_sha256 (dir, got, sizeof got);
  cr_expect_str_eq (got, want, "merged copy of 127 deltas differs from the model");
}

Test (chain, in_use_flag_and_cif_empty)
{
  struct pgd_delta_hdr h;
  struct pgd_err err = { 0 };
  char top[PATH_MAX];
  struct pgd_chain *c, *c2;

  fx_create_image (dir, DISK, 64);
  snprintf (top, sizeof top, "%s/root.hdd", dir);
  c = open_chain (0);
  cr_assert_eq (pgd_delta_read_header (top, &h, &err), 0);
  cr_expect_eq (h.in_use, PGD_DELTA_IN_USE);
  cr_expect (h.flags & PGD_DELTA_CIF_EMPTY);
  /* the lock keeps a second server out */
  cr_expect_eq (pgd_chain_open (&c2, dd, PGD_CHAIN_RO, &err), -1);
  cr_expect_eq (err.errnum, EBUSY);
  put (c, 12345, 100, 1);
  cr_assert_eq (pgd_chain_flush (c, &err), 0, "%s", err.msg);
  cr_assert_eq (pgd_delta_read_header (top, &h, &err), 0);
  cr_expect_eq (h.in_use, PGD_DELTA_IN_USE);
  cr_expect_eq (h.flags & PGD_DELTA_CIF_EMPTY, 0);
  close_chain (c);
  cr_assert_eq (pgd_delta_read_header (top, &h, &err), 0);
  cr_expect_eq (h.in_use, 0);
  cr_expect_eq (h.flags & PGD_DELTA_CIF_EMPTY, 0);
  fx_check_deltas (dir);

  /* all data discarded: CIF_Empty again */
  c = open_chain (0);
  zero (c, 0, DISK);
  close_chain (c);
  cr_assert_eq (pgd_delta_read_header (top, &h, &err), 0);
  cr_expect (h.flags & PGD_DELTA_CIF_EMPTY);
  c = open_chain (PGD_CHAIN_RO);
  verify (c, "all discarded");
  close_chain (c);
}

Test (chain, readonly_and_bounds)
{
  struct pgd_err err = { 0 };
  char buf[512] = { 0 };
  struct pgd_chain *c;

  fx_create_image (dir, DISK, 64);
  c = open_chain (PGD_CHAIN_RO);
  cr_expect_eq (pgd_chain_write (c, buf, sizeof buf, 0, &err), -1);
  cr_expect_eq (err.errnum, EROFS);
  close_chain (c);
  c = open_chain (0);
  cr_expect_eq (pgd_chain_write (c, buf, sizeof buf, DISK - 100, &err), -1);
  cr_expect_eq (err.errnum, ENOSPC);
  cr_expect_eq (pgd_chain_write (c, buf, sizeof buf, DISK, &err), -1);
  cr_expect_eq (err.errnum, ENOSPC);
  cr_expect_eq (pgd_chain_write (c, buf, sizeof buf, DISK - 512, &err), 0, "%s", err.msg);
  close_chain (c);
}

Test (chain, seek_data_hole)
{
  struct pgd_err err = { 0 };
  uint64_t cb = 32768, out = 0;
  struct pgd_chain *c;

  fx_create_image (dir, DISK, 64);
  c = open_chain (0);
  cr_expect_eq (pgd_chain_seek (c, 0, true, &out, &err), -1);
  cr_expect_eq (err.errnum, ENXIO);
  cr_expect_eq (pgd_chain_seek (c, 10, false, &out, &err), 0);
  cr_expect_eq (out, 10);
  put (c, 3 * cb + 5, 10, 1);
  close_chain (c);
  fx_snapshot (dir);
  c = open_chain (0);
  put (c, 4 * cb, cb, 2);
  cr_assert_eq (pgd_chain_seek (c, 0, true, &out, &err), 0);
  cr_expect_eq (out, 3 * cb);
  cr_assert_eq (pgd_chain_seek (c, 3 * cb + 7, true, &out, &err), 0);
  cr_expect_eq (out, 3 * cb + 7);
  cr_assert_eq (pgd_chain_seek (c, 3 * cb, false, &out, &err), 0);
  cr_expect_eq (out, 5 * cb);
  cr_expect_eq (pgd_chain_seek (c, 5 * cb, true, &out, &err), -1);
  cr_expect_eq (err.errnum, ENXIO);
  cr_expect_eq (pgd_chain_seek (c, DISK, false, &out, &err), -1);
  close_chain (c);
}

Test (chain, crash_then_repair_keeps_flushed_data)
{
  struct pgd_err err = { 0 };
  struct pgd_chain *c;
  unsigned char *flushed;

  fx_create_image (dir, DISK, 64);
  fx_snapshot (dir);
  c = open_chain (0);
  random_writes (c, 80, 32768, 7);
  cr_assert_eq (pgd_chain_flush (c, &err), 0, "%s", err.msg);
  flushed = malloc (DISK);
  memcpy (flushed, model, DISK);
  /* more appends that are never flushed, then the process "dies" */
  for (int i = 0; i < 20; i++)
    put (c, (uint64_t)(40 + i) * (1 << 20) + 512, 4096, 99);
  pgd_chain_abandon (c);

  cr_expect_eq (pgd_chain_open (&c, dd, 0, &err), -1);
  cr_expect_eq (err.errnum, EBUSY, "%s", err.msg);
  cr_expect_eq (fx_sh ("cd '%s' && " FX_PLOOP_ENV "ploop check " FX_DD " >/dev/null 2>&1", dir), 0);
  fx_check_deltas (dir);
  c = open_chain (PGD_CHAIN_RO);
  /* everything flushed reads back; the unflushed clusters are either absent or whole */
  memcpy (model, flushed, DISK);
  for (int i = 0; i < 20; i++)
    {
      uint64_t off = (uint64_t)(40 + i) * (1 << 20) + 512;
      unsigned char buf[4096];
      cr_assert_eq (pgd_chain_read (c, buf, sizeof buf, off, &err), 0);
      if (buf[0] != 0 || memcmp (buf, buf + 1, sizeof buf - 1) != 0)
        fx_pattern (model + off, 4096, off, 99);
    }
  verify (c, "after repair");
  close_chain (c);
  free (flushed);
}

Test (chain, clone_leaves_parent_bytes_alone)
{
  char child[PATH_MAX], cdd[PATH_MAX], before[65], after[65];
  struct pgd_err err = { 0 };
  struct pgd_chain *c;

  fx_create_image (dir, DISK, 64);
  c = open_chain (0);
  random_writes (c, 50, 32768, 1);
  close_chain (c);
  /* the parent's own top is now shared: it may only be served read-only */
  snprintf (child, sizeof child, "%s/child", dir);
  cr_assert_eq (mkdir (child, 0700), 0);
  fx_clone (dir, child);
  cr_expect_eq (pgd_chain_open (&c, dd, 0, &err), -1);
  cr_expect_eq (err.errnum, EPERM, "%s", err.msg);
  cr_assert_eq (fx_sh_out (before, sizeof before, "cat '%s'/root.hdd | sha256sum", dir), 0);

  snprintf (cdd, sizeof cdd, "%s/" FX_DD, child);
  cr_assert_eq (pgd_chain_open (&c, cdd, 0, &err), 0, "%s", err.msg);
  cr_expect_eq (pgd_chain_levels (c), 2);
  random_writes (c, 50, 32768, 2);
  zero (c, 0, DISK / 2);
  verify (c, "child");
  close_chain (c);
  cr_assert_eq (fx_sh_out (after, sizeof after, "cat '%s'/root.hdd | sha256sum", dir), 0);
  cr_expect_str_eq (after, before);
  fx_check_deltas (child);
}

/* A v2 delta (BAT in clusters, 64-bit size) crafted from a v1 one reads the same. */
Test (chain, reads_v2)
{
  char path[PATH_MAX];
  struct pgd_delta_hdr h;
  struct pgd_err err = { 0 };
  unsigned char raw[64];
  struct pgd_chain *c;
  int fd;

  fx_create_image (dir, DISK, 64);
  c = open_chain (0);
  random_writes (c, 60, 32768, 5);
  close_chain (c);
  snprintf (path, sizeof path, "%s/root.hdd", dir);
  fd = open (path, O_RDWR);
  cr_assert_geq (fd, 0);
  cr_assert_eq (pread (fd, raw, 64, 0), 64);
  cr_assert_eq (pgd_delta_hdr_parse (raw, 1 << 30, path, &h, &err), 0, "%s", err.msg);
  h.version = 2;
  pgd_delta_hdr_encode (&h, raw);
  cr_assert_eq (pwrite (fd, raw, 64, 0), 64);
  for (uint32_t i = 0; i < h.bat_entries; i++)
    {
      uint32_t e;
      cr_assert_eq (pread (fd, &e, 4, 64 + 4 * i), 4);
      e /= 64;
      cr_assert_eq (pwrite (fd, &e, 4, 64 + 4 * i), 4);
    }
  close (fd);
  c = open_chain (PGD_CHAIN_RO);
  verify (c, "v2");
  close_chain (c);
  cr_expect (fx_qemu_check_ok (path));
}

/* ---- allocating writes in parallel ------------------------------------------- */

#define MT_WRITERS 4      /* quarter k of every cluster belongs to writer k */
#define MT_OPS 400        /* writes per quarter writer */
#define MT_HOT 256        /* clusters the quarter writers share; the base maps the first half */
#define MT_RUN_FIRST 1024 /* clusters from here on belong to the run writer */

struct mt_writer
{
  struct pgd_chain *c;
  uint64_t cb;
  unsigned k; /* quarter, or MT_WRITERS for the run writer */
  unsigned rng;
  uint64_t touched[DISK / (32 << 10) / 64]; /* clusters written */
  char failed[256]; /* first error: criterion asserts only in the main thread */
};

static unsigned
mt_rnd (struct mt_writer *w)
{
  w->rng = w->rng * 1103515245u + 12345u;
  return w->rng >> 8;
}

/* Write LEN bytes at OFF with a pattern into the chain and (disjoint bytes) the model. */
static bool
mt_put (struct mt_writer *w, uint64_t off, size_t len, unsigned char *buf)
{
  struct pgd_err err = { 0 };

  fx_pattern (buf, len, off, mt_rnd (w));
  if (pgd_chain_write (w->c, buf, len, off, &err) < 0)
    {
      snprintf (w->failed, sizeof w->failed, "write %llu+%zu: %s", (unsigned long long)off, len,
                err.msg);
      return false;
    }
  memcpy (model + off, buf, len);
  for (uint64_t vc = off / w->cb; vc <= (off + len - 1) / w->cb; vc++)
    w->touched[vc / 64] |= 1ULL << (vc % 64);
  return true;
}

/* Quarter writer: pieces of its quarter of hot clusters, page-aligned (direct I/O) or
   not; the other writers fill the other quarters of the same clusters meanwhile, so
   allocations of one cluster race and partial writes copy on write from the base. */
static void *
mt_quarter (void *p)
{
  struct mt_writer *w = p;
  uint64_t q = w->cb / MT_WRITERS;
  unsigned char *buf = NULL;

  if (posix_memalign ((void **)&buf, 4096, q) != 0)
    return NULL;
  for (unsigned i = 0; i < MT_OPS && w->failed[0] == 0; i++)
    {
      uint64_t start = (mt_rnd (w) % MT_HOT) * w->cb + w->k * q, off = 0, len = q;
      if (mt_rnd (w) % 2)
        {
          off = mt_rnd (w) % q;
          len = 1 + mt_rnd (w) % (q - off);
        }
      mt_put (w, start + off, len, buf);
    }
  free (buf);
  return NULL;
}

/* Run writer: runs of 1 to 8 clusters, aligned or not, in a region of its own. */
static void *
mt_runs (void *p)
{
  struct mt_writer *w = p;
  size_t max = 8 * w->cb;
  unsigned char *buf = NULL;

  if (posix_memalign ((void **)&buf, 4096, max) != 0)
    return NULL;
  for (unsigned i = 0; i < MT_OPS / 4 && w->failed[0] == 0; i++)
    {
      uint64_t nfirst = disk / w->cb - MT_RUN_FIRST - 8;
      uint64_t off = (MT_RUN_FIRST + mt_rnd (w) % nfirst) * w->cb;
      size_t len = (1 + mt_rnd (w) % 8) * w->cb;
      if (mt_rnd (w) % 2)
        {
          off += mt_rnd (w) % w->cb;
          len -= mt_rnd (w) % w->cb;
        }
      mt_put (w, off, len, buf);
    }
  free (buf);
  return NULL;
}

static volatile int mt_done;

/* Flushes while the writers run: BAT pages go out between reservations and publications. */
static void *
mt_flusher (void *p)
{
  struct mt_writer *w = p;
  struct pgd_err err = { 0 };

  while (!__atomic_load_n (&mt_done, __ATOMIC_ACQUIRE) && w->failed[0] == 0)
    {
      if (pgd_chain_flush (w->c, &err) < 0)
        snprintf (w->failed, sizeof w->failed, "flush: %s", err.msg);
      usleep (2000);
    }
  return NULL;
}

Test (chain, parallel_allocating_writes_match_model)
{
  uint64_t cb = 32 << 10;
  struct mt_writer w[MT_WRITERS + 2];
  pthread_t tid[MT_WRITERS + 2];
  struct pgd_chain_stats st;
  struct pgd_chain *c;

  fx_create_image (dir, DISK, (unsigned)(cb / 512));
  c = open_chain (0);
  for (uint64_t vc = 0; vc < MT_HOT / 2; vc += 3)
    put (c, vc * cb, 2 * cb, (unsigned)vc); /* the base maps 2 of every 3 hot clusters */
  close_chain (c);
  fx_snapshot (dir);
  c = open_chain (0);

  memset (w, 0, sizeof w);
  mt_done = 0;
  for (unsigned k = 0; k < MT_WRITERS + 2; k++)
    {
      w[k] = (struct mt_writer){ .c = c, .cb = cb, .k = k, .rng = 1000 + k };
      void *(*fn) (void *) = k < MT_WRITERS ? mt_quarter : k == MT_WRITERS ? mt_runs : mt_flusher;
      cr_assert_eq (pthread_create (&tid[k], NULL, fn, &w[k]), 0);
    }
  for (unsigned k = 0; k < MT_WRITERS + 1; k++)
    pthread_join (tid[k], NULL);
  __atomic_store_n (&mt_done, 1, __ATOMIC_RELEASE);
  pthread_join (tid[MT_WRITERS + 1], NULL);

  uint64_t touched = 0;
  for (size_t i = 0; i < sizeof w[0].touched / 8; i++)
    {
      uint64_t any = 0;
      for (unsigned k = 0; k < MT_WRITERS + 1; k++)
        any |= w[k].touched[i];
      touched += (uint64_t)__builtin_popcountll (any);
    }
  for (unsigned k = 0; k < MT_WRITERS + 2; k++)
    cr_assert_eq (w[k].failed[0], 0, "thread %u: %s", k, w[k].failed);
  verify (c, "after the parallel writes");
  pgd_chain_get_stats (c, &st);
  /* one top cluster per cluster written: a race that allocated one twice shows here */
  cr_expect_eq (st.allocs, touched, "%llu clusters allocated for %llu written",
                (unsigned long long)st.allocs, (unsigned long long)touched);
  cr_expect_gt (st.cows, 0);
  close_chain (c);

  c = open_chain (PGD_CHAIN_RO);
  verify (c, "reopened read-only");
  close_chain (c);
  fx_check_deltas (dir);
}
