/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ID maps in JSON, as Docker sends them in Init ({"container_id","host_id","size"}
   objects) and as the state file keeps them: one decoder for both. */
#ifndef PGD_IDMAP_H
#define PGD_IDMAP_H

#include <jansson.h>
#include <stddef.h>

#include "driver.h"
#include "err.h"

/* Decode member KEY of the JSON object ROOT: absent, null or an empty array give no
   maps; otherwise an array of objects with the three integers, each within 32 bits.
   *OUT is malloc'd and *N counts the maps decoded so far, also on failure (free *OUT
   either way). -1 with ERR naming KEY[i] and the field on a type error. */
int pgd_idmaps_decode (json_t *root, const char *key, struct pgd_idmap **out, size_t *n,
                       struct pgd_err *err) __attribute__ ((warn_unused_result));

#endif
