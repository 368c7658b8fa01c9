/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "ustar.h"

#include <stdio.h>
#include <string.h>

void
tl_ustar_header (char *h, const char *name, size_t size)
{
  unsigned sum = 0;

  memset (h, 0, 512);
  snprintf (h, 100, "%s", name);
  snprintf (h + 100, 8, "%07o", 0644);
  snprintf (h + 108, 8, "%07o", 0);
  snprintf (h + 116, 8, "%07o", 0);
  snprintf (h + 124, 12, "%011zo", size);
  snprintf (h + 136, 12, "%011o", 0);
  h[156] = '0';
  memcpy (h + 257, "ustar", 6);
  memcpy (h + 263, "00", 2);
  memset (h + 148, ' ', 8);
  for (int i = 0; i < 512; i++)
    sum += (unsigned char)h[i];
  snprintf (h + 148, 8, "%06o", sum);
}
