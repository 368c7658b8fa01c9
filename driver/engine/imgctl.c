/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The image server's control commands (see imgctl.h). */
#include "imgctl.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

#define MAX_FIELDS 4

/* Split CMD into at most MAX_FIELDS '\n'-terminated fields (copied into BUF); the
   number of fields, or -1 when one is empty, too long or not terminated. */
static int
split (const char *cmd, size_t len, char *buf, size_t cap, char **fields)
{
  int n = 0;

  if (len == 0 || len >= cap || cmd[len - 1] != '\n')
    return -1;
  memcpy (buf, cmd, len);
  buf[len] = '\0';
  for (char *p = buf; *p; n++)
    {
      char *nl = strchr (p, '\n');
      if (n == MAX_FIELDS || nl == p || memchr (p, '\0', (size_t)(nl - p)) != NULL)
        return -1;
      *nl = '\0';
      fields[n] = p;
      p = nl + 1;
    }
  return n;
}

int
pgd_imgctl_run (struct pgd_chain *chain, const char *cmd, size_t len, char **dd, char **status,
                struct pgd_err *err)
{
  char buf[MAX_FIELDS * PATH_MAX];
  char *f[MAX_FIELDS];
  int n = split (cmd, len, buf, sizeof buf, f);

  if (n < 1)
    return pgd_error (err, EINVAL, "malformed control command");
  if (strcmp (f[0], PGD_IMGCTL_SNAPSHOT) != 0 || n != 4 || f[1][0] != '/' || f[2][0] != '/'
      || f[3][0] != '/')
    return pgd_error (err, EINVAL, "unknown control command \"%.32s\"", f[0]);
  char *new_dd = strdup (f[2]), *new_status = strdup (f[3]);
  if (new_dd == NULL || new_status == NULL)
    {
      free (new_dd);
      free (new_status);
      return pgd_error (err, ENOMEM, "snapshot");
    }
  uint64_t t0 = pgd_now_ns ();
  if (pgd_chain_snapshot (chain, f[1], f[2], err) < 0)
    {
      free (new_dd);
      free (new_status);
      return -1;
    }
  pgd_log (PGD_LOG_INFO, "snapshot: now serving %s, new top %s (%u levels, %u ms)", f[2], f[1],
           pgd_chain_levels (chain), pgd_elapsed_ms (t0));
  *dd = new_dd;
  *status = new_status;
  return 0;
}
