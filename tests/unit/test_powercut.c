/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Power-cut model of the delta chain (issues #3, #8). A random workload of writes,
   discards and flushes runs against an in-memory model while pgd_chain_inject_fault
   fails the Nth write or fdatasync of the top, for every N the workload reaches. The
   chain is then abandoned as a crash leaves it, repaired the way the engine does at
   the next mount (pgd_image_check with repair), checked by libploop (forced, read-only)
   and read back against the model. */
#include "ploop_fixture.h"

#include "engine/chain.h"
#include "engine/image.h"

/* 1536 clusters of 32 KiB: the BAT spans two 4 KiB pages (the first holds vc 0..1007) */
#define CS 64
#define CB (CS * 512ULL)
#define DISK (1536 * CB)
#define WIN2 1000 /* second window of hot clusters, across the BAT page boundary */
#define NOPS 40
#define CHUNK (1 << 20)

enum op_kind
{
  OP_WRITE,
  OP_ZERO,
  OP_FLUSH,
};

struct op
{
  enum op_kind kind;
  uint64_t off, len;
  unsigned seed;
};

/* How one run ends after the injected fault has hit. */
enum ending
{
  END_CUT,      /* abandon the chain at once: the power cut */
  END_GO_ON,    /* go on with the workload, flush, then cut */
  END_CLOSE,    /* go on, then close cleanly (a failed sync: close must fail) */
  END_NENDINGS, /* count */
};

static char root[PATH_MAX], tpl[PATH_MAX], work[PATH_MAX], dd[PATH_MAX], top[PATH_MAX];
static unsigned char *start, *durable, *cur, *buf; /* template, flushed, current */
static unsigned rng_state;

static void
setup (void)
{
  fx_tmpdir (root, sizeof root, "powercut");
  snprintf (tpl, sizeof tpl, "%s/tpl", root);
  snprintf (work, sizeof work, "%s/work", root);
  snprintf (dd, sizeof dd, "%s/" FX_DD, work);
  start = malloc (DISK);
  durable = malloc (DISK);
  cur = malloc (DISK);
  cr_assert_eq (posix_memalign ((void **)&buf, 4096, CHUNK + 3 * CB), 0);
  cr_assert (start && durable && cur);
}

static void
teardown (void)
{
  free (start);
  free (durable);
  free (cur);
  free (buf);
  fx_sh ("rm -rf '%s'", root);
}

TestSuite (powercut, .init = setup, .fini = teardown);

static unsigned
rnd (void)
{
  rng_state = rng_state * 1103515245u + 12345u;
  return rng_state >> 8;
}

/* A cluster in one of the two hot windows, so that writes overlap and COW. */
static uint64_t
pick_vc (void)
{
  return rnd () % 2 ? rnd () % 48 : WIN2 + rnd () % 40;
}

static void
gen_ops (struct op *ops, unsigned seed)
{
  rng_state = seed;
  for (int i = 0; i < NOPS; i++)
    {
      unsigned r = rnd () % 100;
      struct op *o = &ops[i];

      o->seed = seed * 1000 + i;
      o->off = pick_vc () * CB;
      if (r < 15)
        o->kind = OP_FLUSH;
      else if (r < 27)
        {
          o->kind = OP_ZERO;
          if (rnd () % 2)
            o->len = (1 + rnd () % 2) * CB; /* whole clusters: dropped or written */
          else
            {
              o->off += rnd () % CB;
              o->len = 1 + rnd () % CB;
            }
        }
      else
        {
          o->kind = OP_WRITE;
          o->len = 1 + rnd () % (3 * CB);
          switch (rnd () % 4)
            {
            case 0: /* whole cluster */
              o->len = CB;
              break;
            case 1: /* partial, unaligned: buffered, COW */
              o->off += rnd () % CB;
              break;
            default: /* 4 KiB aligned, as a loop device sends them: direct I/O */
              o->off += rnd () % CB / 4096 * 4096;
              o->len = (o->len + 4095) / 4096 * 4096;
            }
        }
      if (o->off + o->len > DISK)
        o->len = DISK - o->off;
    }
}

/* The byte op O leaves at virtual offset I (inside its range). */
static unsigned char
op_byte (const struct op *o, uint64_t i)
{
  unsigned char b = 0;
  if (o->kind == OP_WRITE)
    fx_pattern (&b, 1, i, o->seed);
  return b;
}

static void
op_bytes (const struct op *o, unsigned char *dst)
{
  if (o->kind == OP_WRITE)
    fx_pattern (dst, o->len, o->off, o->seed);
  else
    memset (dst, 0, o->len);
}

/* Run O against C; 0 or -1 with ERR set. */
static int
op_run (struct pgd_chain *c, const struct op *o, struct pgd_err *err)
{
  switch (o->kind)
    {
    case OP_WRITE:
      fx_pattern (buf, o->len, o->off, o->seed);
      return pgd_chain_write (c, buf, o->len, o->off, err);
    case OP_ZERO:
      return pgd_chain_zero (c, o->off, o->len, err);
    default:
      return pgd_chain_flush (c, err);
    }
}

/* What a crash may leave, byte by byte. Every byte no write touched since the last
   successful flush must read exactly as it was flushed (BASE). A byte that writes since
   then covered (the ops in PENDING, the failed one included) may read as its flushed
   value or as the value one of those writes gave it, whole: an allocating write shows
   only once a flush has published its cluster, an overwrite in place shows as soon as
   it is in the file, and a request that spans both kinds, or that failed half-way (a
   torn write), shows partly. A real power cut adds sector-sized subsets of the writes
   since the last fdatasync, which the same rule admits. What it never admits: zeros or
   stale bytes from a cluster whose data did not land, or the loss of flushed data. */
static void
verify_allowed (struct pgd_chain *c, const unsigned char *base, const struct op *pending, int np,
                const char *when)
{
  struct pgd_err err = { 0 };

  cr_assert_eq (pgd_chain_size (c), DISK);
  for (uint64_t off = 0; off < DISK; off += CHUNK)
    {
      cr_assert_eq (pgd_chain_read (c, buf, CHUNK, off, &err), 0, "%s: %s", when, err.msg);
      if (memcmp (buf, base + off, CHUNK) == 0)
        continue;
      for (uint64_t i = off; i < off + CHUNK; i++)
        {
          unsigned char got = buf[i - off];
          bool ok = got == base[i];
          for (int k = np - 1; !ok && k >= 0; k--)
            ok = i >= pending[k].off && i < pending[k].off + pending[k].len
                 && op_byte (&pending[k], i) == got;
          if (!ok)
            cr_assert_fail ("%s: byte %llu (vc %llu +%llu) reads %02x, flushed %02x, "
                            "no write since gave it that",
                            when, (unsigned long long)i, (unsigned long long)(i / CB),
                            (unsigned long long)(i % CB), got, base[i]);
        }
    }
}

static void
apply (unsigned char *model, const struct op *o)
{
  if (o->kind != OP_FLUSH)
    op_bytes (o, model + o->off);
}

/* Make the flushed state the current one (only the ranges written since change). */
static void
settle (const struct op *pending, int np)
{
  for (int k = 0; k < np; k++)
    memcpy (durable + pending[k].off, cur + pending[k].off, pending[k].len);
}

static struct pgd_chain *
open_work (unsigned flags)
{
  struct pgd_chain *c = NULL;
  struct pgd_err err = { 0 };

  cr_assert_eq (pgd_chain_open (&c, dd, flags, &err), 0, "%s", err.msg);
  return c;
}

/* The two-level image every run starts from: a base holding data in both windows
   (whole and partial clusters) under an empty top; START holds its content. */
static void
make_template (void)
{
  struct pgd_err err = { 0 };
  struct pgd_chain *c = NULL;
  char tdd[PATH_MAX];
  char **files = NULL;

  cr_assert_eq (mkdir (tpl, 0700), 0);
  fx_create_image (tpl, DISK, CS);
  snprintf (tdd, sizeof tdd, "%s/" FX_DD, tpl);
  cr_assert_eq (pgd_chain_open (&c, tdd, 0, &err), 0, "%s", err.msg);
  memset (start, 0, DISK);
  for (uint64_t vc = 0; vc < WIN2 + 40; vc = vc == 47 ? WIN2 : vc + 1)
    {
      struct op o = { OP_WRITE, vc * CB, CB, 7 };
      if (vc % 3 == 2)
        continue; /* nothing below: a partial write zero-fills */
      if (vc % 3 == 1)
        o.off += CB / 4, o.len = CB / 2; /* the rest of the cluster stays zeros */
      cr_assert_eq (op_run (c, &o, &err), 0, "%s", err.msg);
      apply (start, &o);
    }
  cr_assert_eq (pgd_chain_close (c, &err), 0, "%s", err.msg);
  fx_snapshot (tpl);
  cr_assert_eq (pgd_chain_list (tdd, &files, NULL, &err), 0, "%s", err.msg);
  for (int i = 0; files[i]; i++)
    snprintf (top, sizeof top, "%s/%s", work, strrchr (files[i], '/') + 1);
  pgd_chain_free_list (files);
}

static void
fresh_work (void)
{
  cr_assert_eq (fx_sh ("rm -rf '%s' && cp -a '%s' '%s'", work, tpl, work), 0);
}

/* Repair as the engine's mount does after a crash (the top is still in use), with
   libploop's messages about the dirty flag kept off the test log. */
static void
repair_and_check (const char *when)
{
  struct pgd_err err = { 0 };
  bool in_use = false;
  int saved, rc;

  cr_assert_eq (pgd_chain_top_in_use (dd, &in_use, &err), 0, "%s", err.msg);
  cr_assert (in_use, "%s: the top is not marked in use after a crash", when);
  fflush (stderr);
  saved = dup (2);
  int null = open ("/dev/null", O_WRONLY);
  dup2 (null, 2);
  close (null);
  rc = pgd_image_check (work, true, &err);
  dup2 (saved, 2);
  close (saved);
  cr_assert_eq (rc, 0, "%s: repair: %s", when, err.msg);
  cr_assert_eq (pgd_chain_top_in_use (dd, &in_use, &err), 0, "%s", err.msg);
  cr_assert (!in_use, "%s: still in use after the repair", when);
  /* what the engine checks, and the forced read-only ploop_check of every delta */
  cr_assert_eq (pgd_image_check (work, false, &err), 0, "%s: check: %s", when, err.msg);
}

/* The top's BAT as it is in the file (both pages). */
static void
disk_bat (unsigned char *out, size_t len)
{
  int fd = open (top, O_RDONLY);
  cr_assert_geq (fd, 0, "open %s", top);
  cr_assert_eq (pread (fd, out, len, 0), (ssize_t)len);
  close (fd);
}

struct counts
{
  uint64_t writes, syncs, bat_writes;
};

static struct counts
counts_of (struct pgd_chain *c)
{
  struct pgd_chain_stats st;
  pgd_chain_get_stats (c, &st);
  return (struct counts){ st.writes, st.syncs, st.bat_writes };
}

/* One run of OPS with fault KIND at the Nth write or sync (N 0: none), ending as END.
   Returns whether the fault hit. */
static bool
run_once (const struct op *ops, enum pgd_chain_fault kind, unsigned n, enum ending end,
          unsigned flags, struct counts *total)
{
  static const char *kinds[] = { "write", "torn write", "sync" };
  static const char *names[] = { "write", "zero", "flush" };
  struct op pending[NOPS + 1];
  unsigned char bat0[8192], bat1[8192];
  struct pgd_err err = { 0 };
  struct pgd_chain *c;
  char when[128];
  int np = 0, failed = -1;

  fresh_work ();
  memcpy (durable, start, DISK);
  memcpy (cur, start, DISK);
  c = open_work (flags);
  disk_bat (bat0, sizeof bat0);
  if (n)
    pgd_chain_inject_fault (c, kind, n);
  for (int i = 0; i < NOPS; i++)
    {
      struct counts before = counts_of (c), after;
      int rc = op_run (c, &ops[i], &err);
      after = counts_of (c);
      bool hit = failed < 0 && n > 0
                 && (kind == PGD_CHAIN_FAULT_SYNC ? before.syncs < n && after.syncs >= n
                                                  : before.writes < n && after.writes >= n);
      if (failed < 0)
        snprintf (when, sizeof when, "%s fault %u, %s op %d, ending %d", kinds[kind], n,
                  names[ops[i].kind], i, end);
      if (!hit)
        {
          cr_assert_eq (rc, 0, "%s: %s", when, err.msg);
          apply (cur, &ops[i]);
          if (ops[i].kind != OP_FLUSH)
            pending[np++] = ops[i];
          else
            {
              settle (pending, np);
              np = 0;
              disk_bat (bat0, sizeof bat0);
            }
          continue;
        }
      /* the fault hit this op: a clean error, and a chain still consistent */
      cr_assert_eq (rc, -1, "%s: the injected fault was swallowed", when);
      cr_assert_eq (err.errnum, EIO, "%s: %s", when, err.msg);
      failed = i;
      if (ops[i].kind != OP_FLUSH)
        {
          /* every byte of the range is old or new, and the rest is untouched */
          verify_allowed (c, cur, &ops[i], 1, when);
          cr_assert_eq (pgd_chain_read (c, cur + ops[i].off, ops[i].len, ops[i].off, &err), 0);
          pending[np++] = ops[i]; /* what it left may have reached the file */
        }
      if (kind == PGD_CHAIN_FAULT_SYNC)
        {
          /* data not known durable: no BAT page may follow the failed fdatasync */
          if (ops[i].kind == OP_FLUSH && before.syncs + 1 == n)
            {
              cr_expect_eq (after.bat_writes, before.bat_writes, "%s: BAT written", when);
              disk_bat (bat1, sizeof bat1);
              cr_expect (memcmp (bat0, bat1, sizeof bat0) == 0, "%s: BAT changed on disk", when);
            }
          /* and the kernel may have dropped the pages: nothing is accepted any more */
          struct op w = { OP_WRITE, 0, 4096, 1 };
          cr_expect_eq (op_run (c, &w, &err), -1, "%s: write after a failed sync", when);
          cr_expect_eq (pgd_chain_flush (c, &err), -1, "%s: flush after a failed sync", when);
          cr_expect_eq (err.errnum, EIO);
          if (end == END_CLOSE)
            {
              cr_expect_eq (pgd_chain_close (c, &err), -1, "%s: close succeeded", when);
              c = NULL;
            }
          break;
        }
      if (end == END_CUT)
        break;
    }
  if (failed < 0 && n > 0)
    {
      /* past the last write or sync of the workload */
      pgd_chain_abandon (c);
      return false;
    }
  if (n == 0)
    *total = counts_of (c);
  if (kind != PGD_CHAIN_FAULT_SYNC && end != END_CUT && c)
    {
      /* the chain went on after the failed write: all of it is flushed now */
      cr_assert_eq (pgd_chain_flush (c, &err), 0, "%s: final flush: %s", when, err.msg);
      settle (pending, np);
      np = 0;
      if (end == END_CLOSE)
        {
          cr_assert_eq (pgd_chain_close (c, &err), 0, "%s: close: %s", when, err.msg);
          /* closed cleanly: every delta must pass as it is, with no repair */
          cr_assert_eq (pgd_image_check (work, false, &err), 0, "%s: check: %s", when, err.msg);
          c = open_work (PGD_CHAIN_RO);
          verify_allowed (c, durable, NULL, 0, when);
          pgd_chain_abandon (c);
          return true;
        }
    }
  pgd_chain_abandon (c); /* the power cut */
  repair_and_check (when);
  c = open_work (PGD_CHAIN_RO);
  verify_allowed (c, durable, pending, np, when);
  pgd_chain_abandon (c);
  return failed >= 0;
}

static unsigned runs;

/* Every fault point of the workload of SEED, for each kind and each ending. */
static void
sweep (unsigned seed)
{
  struct op ops[NOPS];
  struct counts total = { 0 };

  gen_ops (ops, seed);
  /* a run without a fault counts the writes and syncs (and checks a plain crash) */
  run_once (ops, PGD_CHAIN_FAULT_WRITE, 0, END_CUT, 0, &total);
  cr_assert_gt (total.writes, 10);
  cr_assert_gt (total.syncs, 2);
  for (int kind = PGD_CHAIN_FAULT_WRITE; kind <= PGD_CHAIN_FAULT_SYNC; kind++)
    {
      uint64_t max = kind == PGD_CHAIN_FAULT_SYNC ? total.syncs : total.writes;
      for (unsigned n = 1; n <= max; n++)
        {
          enum ending end = (n + kind) % END_NENDINGS;
          unsigned flags = n % 4 == 3 ? PGD_CHAIN_BUFFERED : 0;
          runs++;
          cr_assert (run_once (ops, kind, n, end, flags, NULL), "fault %d/%u never hit", kind, n);
        }
    }
  cr_log_info ("seed %u: %llu writes, %llu syncs per run; %u runs so far", seed,
               (unsigned long long)total.writes, (unsigned long long)total.syncs, runs);
}

Test (powercut, every_write_and_sync_of_a_random_workload)
{
  make_template ();
  sweep (1);
  sweep (2);
  fx_check_deltas (work); /* qemu-img check too, on the last image */
}

/* An append of two clusters (one zero-padded, one whole over lower data) fails, whole
   or torn, then a copy-on-write append fails: neither may be mapped, the next append
   must take their place in the file (no hole), and the delta must pass libploop's
   check after a clean close, without any repair. */
static void
failed_append (enum pgd_chain_fault kind)
{
  struct op two = { OP_WRITE, 2 * CB + 100, 2 * CB - 100, 10 };
  struct op cow = { OP_WRITE, 100, 1000, 11 }, whole = { OP_WRITE, 4 * CB, CB, 12 };
  struct pgd_err err = { 0 };
  struct pgd_chain_stats st;
  struct pgd_chain *c;
  struct stat sb;
  bool in_use;

  make_template ();
  fresh_work ();
  memcpy (cur, start, DISK);
  c = open_work (0);
  pgd_chain_inject_fault (c, kind, 1);
  cr_assert_eq (op_run (c, &two, &err), -1);
  cr_expect_eq (err.errnum, EIO, "%s", err.msg);
  verify_allowed (c, cur, NULL, 0, "after the failed append");
  pgd_chain_inject_fault (c, kind, 3); /* its third write: the new bytes, after the lower ones */
  cr_assert_eq (op_run (c, &cow, &err), -1);
  cr_expect_eq (err.errnum, EIO, "%s", err.msg);
  verify_allowed (c, cur, NULL, 0, "after the failed copy on write");
  cr_assert_eq (op_run (c, &whole, &err), 0, "%s", err.msg);
  apply (cur, &whole);
  cr_assert_eq (pgd_chain_flush (c, &err), 0, "%s", err.msg);
  pgd_chain_get_stats (c, &st);
  cr_expect_eq (st.allocs, 1);
  /* closed (the clusters fallocated ahead of the appends cut off) */
  cr_assert_eq (pgd_chain_close (c, &err), 0, "%s", err.msg);
  cr_assert_eq (stat (top, &sb), 0);
  cr_expect_eq (sb.st_size, 2 * CB, "the top holds %lld bytes, not header + 1 cluster",
                (long long)sb.st_size);
  cr_assert_eq (pgd_chain_top_in_use (dd, &in_use, &err), 0, "%s", err.msg);
  cr_expect (!in_use);
  cr_assert_eq (pgd_image_check (work, false, &err), 0, "%s", err.msg);
  c = open_work (PGD_CHAIN_RO);
  verify_allowed (c, cur, NULL, 0, "reopened");
  pgd_chain_abandon (c);
  fx_check_deltas (work);
}

Test (powercut, failed_append_is_not_published) { failed_append (PGD_CHAIN_FAULT_WRITE); }

Test (powercut, torn_append_is_not_published) { failed_append (PGD_CHAIN_FAULT_TORN); }

/* After a failed fdatasync nothing is accepted any more, close reports it and leaves the
   top in use, and the image serves again once checked as the engine does. */
Test (powercut, failed_sync_refuses_writes_until_checked)
{
  struct op w = { OP_WRITE, 3 * CB + 5, 2 * CB, 21 };
  struct pgd_err err = { 0 };
  struct pgd_chain *c;

  make_template ();
  fresh_work ();
  memcpy (cur, start, DISK);
  c = open_work (0);
  cr_assert_eq (op_run (c, &w, &err), 0, "%s", err.msg);
  pgd_chain_inject_fault (c, PGD_CHAIN_FAULT_SYNC, 1);
  cr_expect_eq (pgd_chain_flush (c, &err), -1);
  cr_expect_eq (err.errnum, EIO);
  cr_expect_not_null (strstr (err.msg, "fdatasync"), "%s", err.msg);
  cr_expect_eq (op_run (c, &w, &err), -1);
  cr_expect_eq (err.errnum, EIO);
  cr_expect_eq (pgd_chain_zero (c, 0, CB, &err), -1);
  cr_expect_eq (pgd_chain_flush (c, &err), -1);
  cr_expect_not_null (strstr (err.msg, "checked"), "%s", err.msg);
  /* reads still work */
  verify_allowed (c, cur, &w, 1, "after the failed sync");
  cr_expect_eq (pgd_chain_close (c, &err), -1);
  repair_and_check ("after close");
  c = open_work (0);
  cr_assert_eq (op_run (c, &w, &err), 0, "%s", err.msg);
  apply (cur, &w);
  cr_assert_eq (pgd_chain_close (c, &err), 0, "%s", err.msg);
  cr_assert_eq (pgd_image_check (work, false, &err), 0, "%s", err.msg);
  c = open_work (PGD_CHAIN_RO);
  verify_allowed (c, cur, NULL, 0, "written again");
  pgd_chain_abandon (c);
}
