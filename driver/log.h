/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Leveled logging to stderr (dockerd collects a managed plugin's stderr). */
#ifndef PGD_LOG_H
#define PGD_LOG_H

enum pgd_log_level
{
  PGD_LOG_ERROR = 0,
  PGD_LOG_WARN = 1,
  PGD_LOG_INFO = 2,
  PGD_LOG_DEBUG = 3,
};

/* Set the most verbose level that is printed (default PGD_LOG_INFO). */
void pgd_log_set_level (enum pgd_log_level level);

/* Parse "error|warn|info|debug"; returns -1 for anything else. */
int pgd_log_parse_level (const char *s);

/* Print one line "LEVEL message" to stderr when LEVEL is enabled. Thread-safe. */
void pgd_log (enum pgd_log_level level, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

#endif
