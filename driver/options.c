/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "options.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

int
pgd_opt_engine (const char *prog, const char *arg)
{
  if (strcmp (arg, "auto") == 0 || strcmp (arg, "user") == 0 || strcmp (arg, "kernel") == 0)
    return 0;
  fprintf (stderr, "%s: --engine must be auto, user or kernel\n", prog);
  return -1;
}

int
pgd_opt_log_level (const char *prog, const char *arg, int *level)
{
  *level = pgd_log_parse_level (arg);
  if (*level >= 0)
    return 0;
  fprintf (stderr, "%s: --log-level must be error, warn, info or debug\n", prog);
  return -1;
}
