/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ploop images on disk through libploop 1.15 (works without the ploop module).
   An image is a directory holding DiskDescriptor.xml and its delta files. */
#ifndef PGD_IMAGE_H
#define PGD_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define PGD_IMAGE_DD "DiskDescriptor.xml"
#define PGD_IMAGE_BASE "root.hdd"

/* What pgd_image_info reports about an image. */
struct pgd_image_info
{
  uint64_t virtual_size;  /* bytes, from the top delta's header */
  uint32_t cluster_size;  /* bytes */
  unsigned ndeltas;       /* levels in the chain */
  bool top_shared;        /* the top delta has other hard links (a child uses it) */
  uint64_t own_bytes;     /* disk bytes of delta files only this image links */
  char top_file[4096];    /* absolute path of the top delta */
};

/* Create an empty ploop v1 image (no filesystem) in the existing empty directory DIR:
   root.hdd + DiskDescriptor.xml, SIZE bytes virtual, clusters of CLUSTER bytes. */
int pgd_image_create (const char *dir, uint64_t size, uint32_t cluster,
                      struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Make CHILD_DIR (existing, empty) a clone of the closed image in PARENT_DIR: the
   parent's deltas hard-linked, plus a new private empty top delta. O(1) in data. */
int pgd_image_clone (const char *parent_dir, const char *child_dir,
                     struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Grow the closed image DIR to SIZE bytes virtual (top delta private); never shrinks. */
int pgd_image_grow (const char *dir, uint64_t size,
                    struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Check every delta of the closed image DIR read-only and forced (libploop's check; a
   thin delta, whose BAT is partly a hole, gets pgd_delta_check_thin); REPAIR first runs
   libploop's repair of the private top (clears in-use after a crash, trims the tail). */
int pgd_image_check (const char *dir, bool repair,
                     struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Write out the BAT holes of every delta of the closed image DIR (thin deltas, see
   pgd_delta_create_thin), so that libploop's `ploop check` and the kernel engine accept
   it; *FILLED gets the bytes written. Contents unchanged. EBUSY while it is served. */
int pgd_image_allocate (const char *dir, uint64_t *filled,
                        struct pgd_err *err) __attribute__ ((warn_unused_result, nonnull (1, 2)));

/* Describe the image DIR (readable while served: does not need libploop's lock). */
int pgd_image_info (const char *dir, struct pgd_image_info *info,
                    struct pgd_err *err) __attribute__ ((warn_unused_result));

#endif
