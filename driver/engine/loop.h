/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Loop devices through their ioctls (no losetup): attach a file, find, wait, detach. */
#ifndef PGD_LOOP_H
#define PGD_LOOP_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

enum
{
  PGD_LOOP_RO = 1 << 0,  /* read-only device */
  PGD_LOOP_DIO = 1 << 1, /* direct I/O on the backing file */
};

/* Attach the open file FILE_FD to a free loop device with autoclear (the device goes
   away on its last close). Returns the device number in *NR and an open fd of the
   device in *DEV_FD: keep it open until something else (a mount) holds the device. */
int pgd_loop_attach (int file_fd, unsigned flags, int *nr, int *dev_fd, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (3, 4)));

/* Path of the file backing loop device NR into BUF; false when NR is not bound. */
bool pgd_loop_backing (int nr, char *buf, size_t len) __attribute__ ((nonnull (2)));

/* True when loop device NR is bound to BACKING (a path as sysfs shows it). */
bool pgd_loop_bound_to (int nr, const char *backing) __attribute__ ((nonnull (2)));

/* Find a loop device bound to BACKING; its number in *NR, false when there is none. */
bool pgd_loop_find (const char *backing, int *nr) __attribute__ ((nonnull));

/* Wait up to TIMEOUT_MS until loop device NR no longer serves BACKING; ETIMEDOUT. */
int pgd_loop_wait_detached (int nr, const char *backing, unsigned timeout_ms, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull (2)));

/* Detach loop device NR now (LOOP_CLR_FD); EBUSY while it is still open elsewhere. */
int pgd_loop_detach (int nr, struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Write "/dev/loopNR" into BUF. */
void pgd_loop_path (int nr, char *buf, size_t len) __attribute__ ((nonnull (2)));

#endif
