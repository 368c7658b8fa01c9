/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A small hash map from byte-string keys to optional string values, used by the
   diff engine for "paths unpacked from this archive" and "first path of an inode". */
#ifndef PGD_KEYMAP_H
#define PGD_KEYMAP_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

struct pgd_keymap_node;

/* Zero-initialise to get an empty map; free with pgd_keymap_free. */
struct pgd_keymap
{
  struct pgd_keymap_node **slots;
  size_t cap;
  size_t n;
};

/* Insert a copy of KEY (LEN bytes) with a copy of VALUE (may be NULL) unless KEY is
   already present; *ADDED (if given) tells which. */
int pgd_keymap_put (struct pgd_keymap *m, const void *key, size_t len, const char *value,
                    bool *added, struct pgd_err *err) __attribute__ ((warn_unused_result));

/* True when KEY is present; *VALUE (if given) receives its value (owned by the map). */
bool pgd_keymap_get (const struct pgd_keymap *m, const void *key, size_t len, const char **value);

/* Free every node and reset M to empty. */
void pgd_keymap_free (struct pgd_keymap *m);

#endif
