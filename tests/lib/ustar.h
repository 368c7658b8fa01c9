/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Hand-made tar pieces for tests that need a stream byte by byte. */
#ifndef PGD_TEST_USTAR_H
#define PGD_TEST_USTAR_H

#include <stddef.h>

/* Fill the 512 bytes at H with a ustar header for a regular file NAME (< 100 bytes) of
   SIZE bytes, mode 0644, owner 0:0, mtime 0, checksum set. */
void tl_ustar_header (char *h, const char *name, size_t size);

#endif
