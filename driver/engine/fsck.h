/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Private to the user engine: flush before unmount, and check an ext4 that needs it. */
#ifndef PGD_FSCK_H
#define PGD_FSCK_H

#include <stdbool.h>

#include "err.h"

/* Flush the filesystem mounted at TARGET (syncfs) before it is unmounted. When that
   fails (a full host disk: the image server cannot write), IMAGE_DIR is marked so that
   its next mount checks the filesystem first, and ERR says what was lost. */
int pgd_fs_flush (const char *image_dir, const char *target, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Before the ext4 on DEV (IMAGE_DIR's image) is mounted read-write: when its superblock
   records errors or a failed flush marked the image, run e2fsck -p (then -y when -p
   cannot decide), log the outcome and clear the mark. Fails when errors remain. */
int pgd_fs_check (const char *image_dir, const char *dev, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

#endif
