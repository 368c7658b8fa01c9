/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int
pgd_error (struct pgd_err *err, int errnum, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (err == NULL)
    return -1;
  va_start (ap, fmt);
  n = vsnprintf (err->msg, sizeof err->msg, fmt, ap);
  va_end (ap);
  if (n < 0)
    n = 0;
  if (errnum != 0 && (size_t)n < sizeof err->msg)
    snprintf (err->msg + n, sizeof err->msg - n, ": %s", strerror (errnum));
  err->errnum = errnum;
  return -1;
}

int
pgd_error_wrap (struct pgd_err *err, const char *fmt, ...)
{
  char ctx[PGD_ERR_MSG_MAX];
  char old[PGD_ERR_MSG_MAX];
  va_list ap;

  if (err == NULL)
    return -1;
  va_start (ap, fmt);
  vsnprintf (ctx, sizeof ctx, fmt, ap);
  va_end (ap);
  memcpy (old, err->msg, sizeof old);
  /* truncation is fine: the message stays readable */
  size_t n = strnlen (ctx, sizeof err->msg - 3);
  memcpy (err->msg, ctx, n);
  memcpy (err->msg + n, ": ", 2);
  n += 2;
  size_t rest = strnlen (old, sizeof err->msg - n - 1);
  memcpy (err->msg + n, old, rest);
  err->msg[n + rest] = '\0';
  return -1;
}

void
pgd_error_clear (struct pgd_err *err)
{
  err->errnum = 0;
  err->msg[0] = '\0';
}
