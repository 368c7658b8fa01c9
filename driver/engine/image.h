/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ploop images on disk through libploop 1.15 (works without the ploop module).
   An image is a directory holding DiskDescriptor.xml and its delta files. */
#ifndef PGD_IMAGE_H
#define PGD_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define PGD_IMAGE_DD "DiskDescriptor.xml"
#define PGD_IMAGE_BASE "root.hdd"
/* libploop 1.15 refuses a snapshot of a DD that already has 127 images ("The maximum
   number of snapshots (126) has been reached", measured): a chain ends at 127 deltas,
   so pgd_image_clone needs a parent of at most 126. */
#define PGD_IMAGE_MAX_DELTAS 127

/* What pgd_image_info reports about an image. */
struct pgd_image_info
{
  uint64_t virtual_size; /* bytes, from the top delta's header */
  uint32_t cluster_size; /* bytes */
  unsigned ndeltas;      /* levels in the chain */
  bool raw_base;         /* the base is a raw file, not a ploop delta */
  bool top_shared;       /* the top delta has other hard links (a child uses it) */
  uint64_t own_bytes;    /* disk bytes of delta files only this image links */
  char top_file[4096];   /* absolute path of the top delta */
};

/* Set libploop up, once per process: nothing of it on the console; its messages
   reach our errors and log with the object named. Call before any libploop call. */
void pgd_image_lib_init (void);

/* Create an empty ploop v1 image (no filesystem) in the existing empty directory DIR:
   root.hdd + DiskDescriptor.xml, SIZE bytes virtual, clusters of CLUSTER bytes. */
int pgd_image_create (const char *dir, uint64_t size, uint32_t cluster, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Make CHILD_DIR (existing, empty) a clone of the closed image in PARENT_DIR: the
   parent's deltas hard-linked, plus a new private empty top delta. O(1) in data. */
int pgd_image_clone (const char *parent_dir, const char *child_dir, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* The same for a parent being served read-write, for an online snapshot by its image
   server (engine.h): its DD lock is not taken and its top may be in use; the parent
   must be a v1 image. The new top's path goes to TOP (TOP_LEN bytes). Until the server
   has switched to the new top the clone is not a valid image: keep it in staging. */
int pgd_image_clone_served (const char *parent_dir, const char *child_dir, char *top,
                            size_t top_len, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Make DST_DIR (existing, empty) a standalone image of one private delta holding the
   same disk as the closed image SRC_DIR: a sparse copy of its delta when it has just
   one, else every cluster its chain maps merged into one delta (cost: the data).
   *COPIED (may be NULL) gets the bytes of data copied. SRC_DIR may be served
   read-only meanwhile. */
int pgd_image_copy (const char *src_dir, const char *dst_dir, uint64_t *copied, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Grow the closed image DIR to SIZE bytes virtual (top delta private); never shrinks. */
int pgd_image_grow (const char *dir, uint64_t size, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Check every delta of the closed image DIR read-only and forced (libploop's check; a
   thin delta, whose BAT is partly a hole, gets pgd_delta_check_thin); REPAIR first runs
   libploop's repair of the private top (clears in-use after a crash, trims the tail). */
int pgd_image_check (const char *dir, bool repair, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Write out the BAT holes of every delta of the closed image DIR (thin deltas, see
   pgd_delta_create_thin), so that libploop's `ploop check` and the kernel engine accept
   it; *FILLED gets the bytes written. Contents unchanged. EBUSY while it is served. */
int pgd_image_allocate (const char *dir, uint64_t *filled, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (1, 2)));

/* Describe the image DIR (readable while served: does not need libploop's lock). */
int pgd_image_info (const char *dir, struct pgd_image_info *info, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

#endif
