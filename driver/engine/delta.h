/* SPDX-License-Identifier: GPL-2.0-or-later */
/* One ploop delta file: header parse and validation, BAT access, the in-use flag.
   v1 is read and written; v2 is read (and written the same way, untested on the
   kernel). A raw base (no header, identity mapping) can be opened read-only. */
#ifndef PGD_DELTA_H
#define PGD_DELTA_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define PGD_SECTOR_SIZE 512
#define PGD_DELTA_HDR_SIZE 64
#define PGD_DELTA_MIN_CLUSTER_SECTORS 64     /* 32 KiB */
#define PGD_DELTA_MAX_CLUSTER_SECTORS 131072 /* 64 MiB */
#define PGD_DELTA_IN_USE 0x746F6E59u         /* "Ynot": open read-write */
#define PGD_DELTA_CIF_EMPTY 0x1u
#define PGD_DELTA_CIF_CONVERT 0x2u
#define PGD_DELTA_BAT_PAGE 4096 /* unit in which BAT changes are written back */

/* A delta header, decoded. */
struct pgd_delta_hdr
{
  int version;                  /* 1 or 2 */
  uint32_t cluster_sectors;     /* m_Sectors */
  uint32_t bat_entries;         /* m_Size */
  uint64_t size_sectors;        /* virtual size */
  uint32_t in_use;              /* m_DiskInUse */
  uint32_t first_block_sectors; /* m_FirstBlockOffset */
  uint32_t flags;               /* m_Flags */
};

/* An open delta file. */
struct pgd_delta
{
  int fd;                 /* buffered: header, fallbacks */
  int dfd;                /* O_DIRECT on the same file, -1 if unavailable */
  uint32_t dio_mem_align; /* buffer alignment dfd needs */
  uint32_t dio_off_align; /* offset and length alignment dfd needs */
  bool writable;
  bool raw; /* raw base: no header, vc -> vc * cluster */
  char *path;
  struct pgd_delta_hdr h;                    /* raw base: only cluster_sectors and size are set */
  unsigned char hdr_raw[PGD_DELTA_HDR_SIZE]; /* on-disk header, rewritten on flag changes */
  uint64_t cluster_bytes;
  uint64_t header_clusters; /* clusters taken by header + BAT */
  uint64_t file_size;       /* at open */
  uint64_t file_clusters;   /* floor (file_size / cluster_bytes) at open */
};

enum
{
  PGD_DELTA_RW = 1 << 0,           /* open O_RDWR (refused when the delta is in use) */
  PGD_DELTA_ALLOW_IN_USE = 1 << 1, /* read-only inspection of a delta left in use */
  PGD_DELTA_BUFFERED = 1 << 2,     /* no O_DIRECT descriptor */
};

/* Decode and validate the 64-byte header RAW of the delta NAME whose file has FILE_SIZE
   bytes (the checks of libploop's open_delta). */
int pgd_delta_hdr_parse (const void *raw, uint64_t file_size, const char *name,
                         struct pgd_delta_hdr *h, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1, 3, 4)));

/* Read and validate the header of the delta file PATH without keeping it open. */
int pgd_delta_read_header (const char *path, struct pgd_delta_hdr *h, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1, 2)));

/* Open the ploop delta PATH (FLAGS: PGD_DELTA_*). A delta in use is refused (EBUSY)
   unless opened read-only with PGD_DELTA_ALLOW_IN_USE. */
int pgd_delta_open (struct pgd_delta *d, const char *path, unsigned flags, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1, 2)));

/* Open the raw base PATH read-only with clusters of CLUSTER_SECTORS sectors (FLAGS:
   PGD_DELTA_BUFFERED or 0). */
int pgd_delta_open_raw (struct pgd_delta *d, const char *path, uint32_t cluster_sectors,
                        unsigned flags, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1, 2)));

/* Close D (no header change); safe on a zeroed or already closed struct. */
void pgd_delta_close (struct pgd_delta *d);

/* True when an I/O of LEN bytes at OFF from/to BUF may use D's O_DIRECT descriptor. */
static inline bool
pgd_delta_dio_ok (const struct pgd_delta *d, const void *buf, uint64_t len, uint64_t off)
{
  return d->dfd >= 0 && (uintptr_t)buf % d->dio_mem_align == 0 && len % d->dio_off_align == 0
         && off % d->dio_off_align == 0;
}

/* Called for every mapped BAT entry: VC maps to file cluster CLUSTER. */
typedef void (*pgd_delta_visit_fn) (void *ctx, uint32_t vc, uint64_t cluster);

/* Walk the whole BAT of D (a raw base: every cluster inside the file), validating every
   entry (alignment, past the header, inside the file, not used twice), and call VISIT
   for each mapped one. */
int pgd_delta_scan_bat (const struct pgd_delta *d, pgd_delta_visit_fn visit, void *ctx,
                        struct pgd_err *err) __attribute__ ((warn_unused_result, nonnull (1, 2)));

/* The BAT entry that points at file cluster CLUSTER (v1: sectors, v2: clusters). */
uint32_t pgd_delta_entry_for (const struct pgd_delta *d, uint64_t cluster)
    __attribute__ ((nonnull (1)));

/* Largest file cluster a BAT entry of D can address. */
uint64_t pgd_delta_max_cluster (const struct pgd_delta *d) __attribute__ ((nonnull (1)));

/* Set IN_USE and FLAGS in D's in-memory header (hdr_raw and h) without writing it. */
void pgd_delta_hdr_set (struct pgd_delta *d, uint32_t in_use, uint32_t flags)
    __attribute__ ((nonnull (1)));

/* Rewrite the header of the writable delta D with IN_USE and FLAGS, then fsync. */
int pgd_delta_write_header (struct pgd_delta *d, uint32_t in_use, uint32_t flags,
                            struct pgd_err *err) __attribute__ ((warn_unused_result, nonnull (1)));

/* Encode header H (v1 or v2; heads/cylinders from libploop's CHS rule are not kept:
   readers ignore them) into RAW[64]. Used by tests and tools that craft deltas. */
void pgd_delta_hdr_encode (const struct pgd_delta_hdr *h, void *raw) __attribute__ ((nonnull));

/* ---- thin deltas (delta_thin.c): the unused BAT left as a file hole ---- */

/* Fill *H with the header of a new, empty v1 delta of SIZE_SECTORS virtual sectors and
   clusters of CLUSTER_SECTORS (m_Size, m_FirstBlockOffset as libploop computes them). */
int pgd_delta_geometry (uint64_t size_sectors, uint32_t cluster_sectors, struct pgd_delta_hdr *h,
                        struct pgd_err *err) __attribute__ ((warn_unused_result, nonnull (3)));

/* Create PATH (must not exist; mode 0600) as an empty v1 delta: its header written, its
   BAT a hole (reads as zeros: nothing mapped), so it costs one page of disk and no write
   proportional to the virtual size. Fsynced; the caller fsyncs the directory. */
int pgd_delta_create_thin (const char *path, uint64_t size_sectors, uint32_t cluster_sectors,
                           struct pgd_err *err) __attribute__ ((warn_unused_result, nonnull (1)));

/* Whether the closed delta PATH has holes in its header area (*HEADER_HOLES: a thin
   delta) and, when DATA_HOLES is not NULL, in its data area (never valid). */
int pgd_delta_sparse (const char *path, bool *header_holes, bool *data_holes, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1, 2)));

/* Punch every all-zero page of the header area of the closed delta PATH but the first
   (a delta libploop wrote in full becomes thin). Contents unchanged; fsynced. */
int pgd_delta_thin (const char *path, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1)));

/* Write zeros into every hole of the header area of the closed delta PATH, so that
   libploop's check and the kernel engine accept it; *FILLED gets the bytes written.
   Contents unchanged; fsynced. */
int pgd_delta_allocate (const char *path, uint64_t *filled, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1, 2)));

/* Validate the closed delta PATH as `ploop check -f -c -r` does, but accepting holes in
   its header area: header, BAT entries (aligned, past the header, inside the file, used
   once), whole clusters, no hole in the data area, CIF_Empty right, not in use. */
int pgd_delta_check_thin (const char *path, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1)));

#endif
