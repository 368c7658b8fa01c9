/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum pgd_log_level current_level = PGD_LOG_INFO;
static const char *const names[] = { "error", "warn", "info", "debug" };

void
pgd_log_set_level (enum pgd_log_level level)
{
  current_level = level;
}

int
pgd_log_parse_level (const char *s)
{
  for (int i = 0; i < 4; i++)
    if (strcmp (s, names[i]) == 0)
      return i;
  return -1;
}

void
pgd_log (enum pgd_log_level level, const char *fmt, ...)
{
  char line[4096];
  struct timespec ts;
  struct tm tm;
  va_list ap;
  int n;

  if (level > current_level)
    return;
  clock_gettime (CLOCK_REALTIME, &ts);
  gmtime_r (&ts.tv_sec, &tm);
  n = snprintf (line, sizeof line, "%02d:%02d:%02d.%03ld %s ", tm.tm_hour, tm.tm_min, tm.tm_sec,
                ts.tv_nsec / 1000000, names[level]);
  va_start (ap, fmt);
  vsnprintf (line + n, sizeof line - n, fmt, ap);
  va_end (ap);
  /* one fputs per line keeps concurrent lines whole */
  strncat (line, "\n", sizeof line - strlen (line) - 1);
  fputs (line, stderr);
}
