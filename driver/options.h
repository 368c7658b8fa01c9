/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Command-line options that every face's binary takes alike (--engine, --log-level):
   checked in one place, with one message. */
#ifndef PGD_OPTIONS_H
#define PGD_OPTIONS_H

/* Check --engine ARG (auto, user or kernel): 0, or -1 with a message for PROG on stderr. */
int pgd_opt_engine (const char *prog, const char *arg) __attribute__ ((warn_unused_result));

/* Parse --log-level ARG into *LEVEL (a PGD_LOG_* level): 0, or -1 with a message for
   PROG on stderr. */
int pgd_opt_log_level (const char *prog, const char *arg, int *level)
    __attribute__ ((warn_unused_result));

#endif
