/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The JSON codec of the GraphDriver protocol: request bodies decoded into the
   driver.h request types, results encoded into response bodies. Pure: no HTTP,
   no I/O, so both the plugin and the unit tests link it. */
#ifndef PGD_PROTO_H
#define PGD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "driver.h"
#include "err.h"

/* Largest JSON request body accepted, in bytes. */
#define PGD_PROTO_BODY_MAX (1024 * 1024)

/* A decoded per-layer request. The strings live as long as the request; PARENT and
   MOUNT_LABEL are NULL when absent (an absent, null or "" Parent means none). */
struct pgd_proto_layer_req
{
  void *doc; /* the parsed document the strings point into */
  const char *id;
  const char *parent;
  const char *mount_label;
  struct pgd_kvlist storage_opt;
};

/* A decoded Init request; REQ's strings and arrays live as long as this object. */
struct pgd_proto_init_req
{
  void *doc;
  struct pgd_init_req req;
};

/* Check that BODY is one JSON object (calls without arguments: Status, Cleanup...). */
int pgd_proto_decode_empty (const char *body, size_t len, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Decode a per-layer request: ID (required, valid), Parent (valid when present),
   MountLabel, StorageOpt. On error OUT is left empty and needs no free. */
int pgd_proto_decode_layer (const char *body, size_t len, struct pgd_proto_layer_req *out,
                            struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Release what pgd_proto_decode_layer allocated; safe on a zeroed object. */
void pgd_proto_layer_req_free (struct pgd_proto_layer_req *req);

/* Fill the Create/CreateReadWrite request OUT from the decoded IN (OUT borrows IN). */
void pgd_proto_create_req (const struct pgd_proto_layer_req *in, bool rw,
                           struct pgd_create_req *out);

/* Decode Init: Home (required, non-empty), Opts (null or array of strings), UIDMaps
   and GIDMaps (null or arrays of {container_id, host_id, size}). */
int pgd_proto_decode_init (const char *body, size_t len, struct pgd_proto_init_req *out,
                           struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Release what pgd_proto_decode_init allocated; safe on a zeroed object. */
void pgd_proto_init_req_free (struct pgd_proto_init_req *req);

/* The encoders below return a malloc'd compact JSON text, or NULL when out of memory.
   Strings that are not valid UTF-8 have their non-ASCII bytes replaced by '?'. */

/* {"Err":MSG} */
char *pgd_proto_encode_err (const char *msg);

/* {} */
char *pgd_proto_encode_empty (void);

/* {"Implements":["GraphDriver"]} */
char *pgd_proto_encode_activate (void);

/* {"Capabilities":{"ReproducesExactDiffs":false}} */
char *pgd_proto_encode_capabilities (void);

/* {"Dir":DIR} */
char *pgd_proto_encode_dir (const char *dir);

/* {"Exists":true|false} */
char *pgd_proto_encode_exists (bool exists);

/* {"Size":SIZE}, always a JSON integer. */
char *pgd_proto_encode_size (int64_t size);

/* {"Status":[[key,value],...]} in list order. */
char *pgd_proto_encode_status (const struct pgd_kvlist *status);

/* {"Metadata":{key:value,...}}; a repeated key keeps its last value. */
char *pgd_proto_encode_metadata (const struct pgd_kvlist *metadata);

/* {"Changes":[{"Path":path,"Kind":n},...]} in list order. */
char *pgd_proto_encode_changes (const struct pgd_changes *changes);

#endif
