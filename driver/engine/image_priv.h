/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Internals of the image module shared by image.c, image_dd.c and image_lib.c. Not for
   other modules. */
#ifndef PGD_IMAGE_PRIV_H
#define PGD_IMAGE_PRIV_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ploop/libploop.h>

#include "err.h"
#include "image.h"
#include "log.h"

/* ploop_check flags (libploop's check.h is not installed). */
#define PGD_CHECK_FORCE 0x01
#define PGD_CHECK_DROPINUSE 0x04
#define PGD_CHECK_DETAILED 0x08
#define PGD_CHECK_REPAIR_SPARSE 0x10
#define PGD_CHECK_READONLY 0x20
#define PGD_CHECK_RAW 0x80

#define SECTOR_BYTES 512u
#define MIN_CLUSTER (32u << 10) /* 64 sectors: libploop refuses 32 */
#define MAX_CLUSTER (64u << 20) /* 131072 sectors */
#define MAX_DELTAS 128          /* images per DiskDescriptor.xml (PLOOP.md §3) */
#define V1_MAX_SECTORS 0xffffffffULL
#define NONE_UUID "{00000000-0000-0000-0000-000000000000}"
#define GUID_LEN 64
#define LOCK_FILE PGD_IMAGE_DD ".lck"
/* libploop 1.15 copies about PATH_MAX bytes from path arguments (pitfall 1): every
   path handed to it lives in a zero-filled buffer of this size. */
#define LPATH (2 * PATH_MAX)

/* An image's DD and its chain. The file names are our own copies: libploop calls
   that take the DD lock rebuild di->images (pitfall 2). */
struct pgd_dd_chain
{
  struct ploop_disk_images_data *di;
  unsigned n;              /* levels */
  char *files[MAX_DELTAS]; /* [0] = base … [n-1] = top, absolute */
  bool raw_base;
  uint32_t blocksize; /* sectors */
};

/* Free what pgd_dd_chain_read filled; C may be half filled or empty. */
void pgd_dd_chain_free (struct pgd_dd_chain *c);

#define cleanup_chain __attribute__ ((cleanup (pgd_dd_chain_free)))

/* Parse DIR/DiskDescriptor.xml into C (the chain from base to top). Takes no lock, so
   it works while the image is served. */
int pgd_dd_chain_read (const char *dir, struct pgd_dd_chain *c, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* True when the image is one raw file (no ploop delta). */
bool pgd_dd_top_is_raw (const struct pgd_dd_chain *c);

/* Format a path into BUF (LPATH bytes, zero-filled first, so libploop may read PATH_MAX
   bytes past its start); ENAMETOOLONG beyond PATH_MAX. */
int pgd_lpath (char *buf, struct pgd_err *err, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4), warn_unused_result));

/* Fill ERR with libploop's last message for a failed call WHAT on OBJ (rc RC); -1. */
int pgd_libploop_error (struct pgd_err *err, int rc, const char *what, const char *obj);

/* libploop's last message, copied into BUF (before a call, for pgd_libploop_note). */
void pgd_libploop_last (char *buf, size_t cap);

/* Log at LEVEL what a call WHAT on OBJ that succeeded reported, when it differs from
   BEFORE (its last message before the call): never bare. */
void pgd_libploop_note (enum pgd_log_level level, const char *before, const char *what,
                        const char *obj);

/* Record FILE as the new top of the in-memory DD DI under TOPDELTA_UUID, the old top
   renamed to a fresh GUID, as ploop_create_snapshot does; DI stays the caller's to
   store and to free (also on error). */
int pgd_image_di_push_top (struct ploop_disk_images_data *di, const char *file, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull));

#endif
