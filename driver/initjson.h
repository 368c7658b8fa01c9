/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Init's fields in JSON, as Docker sends them and as the state file keeps them: one
   decoder for both. */
#ifndef PGD_INITJSON_H
#define PGD_INITJSON_H

#include <jansson.h>
#include <stddef.h>

#include "driver.h"
#include "err.h"

/* Decode Opts (absent, null or an array of strings), UIDMaps and GIDMaps (absent, null
   or arrays of {"container_id","host_id","size"} objects, each integer within 32 bits)
   of the JSON object ROOT into REQ; Home is each caller's (Docker's Init and the state
   file word its errors apart). REQ's arrays are malloc'd, their counts cover what was
   decoded, also on failure (free them either way); the Opts strings belong to ROOT.
   -1 with ERR naming the field (e.g. UIDMaps[0]: missing host_id) on a type error. */
int pgd_init_decode_fields (json_t *root, struct pgd_init_req *req, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

#endif
