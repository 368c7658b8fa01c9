/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A ploop delta chain opened for serving: one merged map (virtual cluster -> level,
   file cluster) built at open, reads that fall through in O(1) per cluster, writes
   that copy on write into the top delta in the kernel's order (PLOOP.md §2). */
#ifndef PGD_CHAIN_H
#define PGD_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define PGD_CHAIN_LOCK_SUFFIX ".lck" /* DiskDescriptor.xml.lck, libploop's image lock */

struct pgd_chain;

enum
{
  PGD_CHAIN_RO = 1 << 0,       /* every delta O_RDONLY, nothing marked in use */
  PGD_CHAIN_BUFFERED = 1 << 1, /* data through the page cache instead of O_DIRECT */
};

/* Counters for tests and diagnostics. */
struct pgd_chain_stats
{
  uint64_t allocs;     /* clusters appended to the top */
  uint64_t cows;       /* of them, partial writes filled from a lower level */
  uint64_t unmaps;     /* top clusters dropped by discard */
  uint64_t flushes;    /* flushes that synced something */
  uint64_t bat_writes; /* BAT pages written */
  uint64_t dio;        /* data reads and writes through O_DIRECT */
  uint64_t buffered;   /* through the page cache (unaligned, or O_DIRECT unavailable) */
  uint64_t writes;     /* pwrite/pwritev calls to the top: data, copy on write, BAT pages */
  uint64_t syncs;      /* fdatasync calls on the top */
};

/* Deltas one chain may have: PLOOP.md's limit; libploop 1.15 itself snapshots up to
   127 (test_chain.c's deepest_chain_127_deltas). */
#define PGD_CHAIN_MAX_LEVELS 128

/* Faults pgd_chain_inject_fault can make happen. */
enum pgd_chain_fault
{
  PGD_CHAIN_FAULT_WRITE, /* a write to the top fails with EIO before any byte lands */
  PGD_CHAIN_FAULT_TORN,  /* the write fails after its first half (whole sectors) landed */
  PGD_CHAIN_FAULT_SYNC,  /* an fdatasync of the top fails with EIO */
};

/* Take DD_PATH's lock file (flock LOCK_EX|LOCK_NB on DD_PATH.lck, created if missing)
   and return its fd in *FD; EBUSY when another process holds it. */
int pgd_chain_lock (const char *dd_path, int *fd, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1, 2)));

/* List the delta files of the image described by DD_PATH, base first, top last, as a
   NULL-terminated malloc'd array of absolute paths (free with pgd_chain_free_list).
   *RAW_BASE (may be NULL) tells whether the base is a raw file. */
int pgd_chain_list (const char *dd_path, char ***files, bool *raw_base, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1, 2)));

/* Free a list from pgd_chain_list. */
void pgd_chain_free_list (char **files);

/* Read the in-use flag of the top delta of the image DD_PATH into *IN_USE. */
int pgd_chain_top_in_use (const char *dd_path, bool *in_use, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1, 2)));

/* Open the chain described by DD_PATH while holding its lock: lower levels O_RDONLY,
   the top read-write and marked in use (fsynced) unless FLAGS has PGD_CHAIN_RO. Data
   I/O that is aligned goes through O_DIRECT unless FLAGS has PGD_CHAIN_BUFFERED.
   Refuses a delta left in use, and a shared (hard-linked) top read-write. */
int pgd_chain_open (struct pgd_chain **out, const char *dd_path, unsigned flags,
                    struct pgd_err *err) __attribute__ ((warn_unused_result, nonnull (1, 2)));

/* The same with the delta FILES already known (pgd_chain_list's NULL-terminated list,
   base first; RAW_BASE as it reports), so that no DiskDescriptor.xml is parsed here:
   the image server gets them from the plugin, which lists them while it owns the
   image. DD_PATH still names the lock taken. */
int pgd_chain_open_files (struct pgd_chain **out, const char *dd_path, char *const *files,
                          bool raw_base, unsigned flags, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1, 2, 3)));

/* Virtual size in bytes (from the top delta's header). */
uint64_t pgd_chain_size (const struct pgd_chain *c) __attribute__ ((nonnull));

/* Cluster size in bytes. */
uint32_t pgd_chain_cluster_size (const struct pgd_chain *c) __attribute__ ((nonnull));

/* Number of levels (deltas) in the chain. */
unsigned pgd_chain_levels (const struct pgd_chain *c) __attribute__ ((nonnull));

/* Bytes of memory the chain holds for its maps (for RSS accounting). */
size_t pgd_chain_mem (const struct pgd_chain *c) __attribute__ ((nonnull));

/* Copy the counters. */
void pgd_chain_get_stats (const struct pgd_chain *c, struct pgd_chain_stats *s)
    __attribute__ ((nonnull));

/* Read LEN bytes at virtual offset OFF into BUF; the range must lie inside the disk.
   Unmapped clusters read as zeros. Thread-safe. */
int pgd_chain_read (struct pgd_chain *c, void *buf, size_t len, uint64_t off, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1, 2)));

/* Give the calling thread what a copy on write into C needs (its bounce buffer,
   allocated and touched), so that its first copy neither allocates nor faults a page
   in; no-op on a read-only chain. Call once in every I/O thread before it serves. */
int pgd_chain_thread_prepare (struct pgd_chain *c, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1)));

/* Write LEN bytes from BUF at OFF into the top (copy on write of whole clusters).
   EROFS on a read-only chain, ENOSPC past the virtual size or the delta's limits.
   The data is not durable before pgd_chain_flush. On error, no cluster that was not
   written whole is mapped; clusters the top already owned may hold part of BUF.
   Thread-safe. */
int pgd_chain_write (struct pgd_chain *c, const void *buf, size_t len, uint64_t off,
                     struct pgd_err *err) __attribute__ ((warn_unused_result, nonnull (1, 2)));

/* Make [OFF, OFF+LEN) read as zeros: whole clusters only the top maps are dropped from
   its BAT, clusters no level maps are left alone, the rest is written with zeros. */
int pgd_chain_zero (struct pgd_chain *c, uint64_t off, uint64_t len, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1)));

/* Make every completed write durable: fdatasync the data, write the dirty BAT pages
   (and CIF_Empty), fdatasync again. No-op on a read-only chain. After a failed
   fdatasync the chain refuses every later write, discard and flush (EIO), and close
   leaves the top marked in use, so that the next open goes through a check. */
int pgd_chain_flush (struct pgd_chain *c, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1)));

/* SEEK_DATA (DATA true) or SEEK_HOLE from OFF at cluster granularity, from the merged
   map; ENXIO when OFF is past the end or no data follows. */
int pgd_chain_seek (struct pgd_chain *c, uint64_t off, bool data, uint64_t *out,
                    struct pgd_err *err) __attribute__ ((warn_unused_result, nonnull (1, 4)));

/* Flush, clear the in-use flag (CIF_Empty fixed) with fsync, release the lock and free C.
   C is freed even on error; the in-use flag then stays set. */
int pgd_chain_close (struct pgd_chain *c, struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Online snapshot: wait for the I/O in flight and hold new I/O back, flush the top and
   close it as a clean close would (in use cleared, CIF_Empty right; it stays open
   read-only as a lower level), then open TOP_PATH (a private, empty delta of the same
   geometry) as the new top, marked in use, and move to the lock of DD_PATH (the image
   the chain now serves; the old lock is let go). From then on writes copy up into the
   new top. On failure before the old top was closed nothing changed; when only marking
   the new top failed the old top is marked in use again and goes on serving (or, if
   that fails too, the chain refuses writes). EROFS on a read-only chain. */
int pgd_chain_snapshot (struct pgd_chain *c, const char *top_path, const char *dd_path,
                        struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1, 2, 3)));

/* Free C without flushing or clearing in-use, as a crash would leave it (tests). */
void pgd_chain_abandon (struct pgd_chain *c);

/* For tests only (the power-cut model): make the NTH write (KIND WRITE or TORN, counted
   as stats.writes counts them) or the NTH fdatasync (KIND SYNC, as stats.syncs) of the
   top from now on fail with EIO; NTH 0 disarms KIND. Inert unless called: otherwise a
   write or sync only compares a counter with 0. Call it while no I/O is in flight. */
void pgd_chain_inject_fault (struct pgd_chain *c, enum pgd_chain_fault kind, unsigned nth)
    __attribute__ ((nonnull));

#endif
