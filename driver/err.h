/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Error object carried from the lowest layer up to the HTTP layer (crun style). */
#ifndef PGD_ERR_H
#define PGD_ERR_H

#include <stddef.h>

#define PGD_ERR_MSG_MAX 2048

/* An error: errno-like code (0 when none applies) and a message naming the object. */
struct pgd_err
{
  int errnum;
  char msg[PGD_ERR_MSG_MAX];
};

/* Fill ERR with the formatted message, plus ": strerror(ERRNUM)" when ERRNUM != 0; returns -1. */
int pgd_error (struct pgd_err *err, int errnum, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

/* Prefix the message already in ERR with the formatted context and ": "; returns -1. */
int pgd_error_wrap (struct pgd_err *err, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

/* Reset ERR to "no error". */
void pgd_error_clear (struct pgd_err *err);

#endif
