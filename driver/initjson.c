/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "initjson.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

static int
field (json_t *obj, const char *key, size_t i, const char *name, uint32_t *out, struct pgd_err *err)
{
  json_t *v = json_object_get (obj, name);

  if (v == NULL)
    return pgd_error (err, 0, "%s[%zu]: missing %s", key, i, name);
  if (!json_is_integer (v) || json_integer_value (v) < 0
      || json_integer_value (v) > (json_int_t)UINT32_MAX)
    return pgd_error (err, 0, "%s[%zu]: %s is not an integer in 0..4294967295", key, i, name);
  *out = (uint32_t)json_integer_value (v);
  return 0;
}

static int
idmaps_decode (json_t *root, const char *key, struct pgd_idmap **out, size_t *n,
               struct pgd_err *err)
{
  json_t *arr = json_object_get (root, key);
  size_t i;
  json_t *v;

  *out = NULL;
  *n = 0;
  if (arr == NULL || json_is_null (arr))
    return 0;
  if (!json_is_array (arr))
    return pgd_error (err, 0, "%s is not an array", key);
  if (json_array_size (arr) == 0)
    return 0;
  *out = calloc (json_array_size (arr), sizeof **out);
  if (*out == NULL)
    return pgd_error (err, ENOMEM, "%s", key);
  json_array_foreach (arr, i, v)
  {
    struct pgd_idmap *m = &(*out)[i];
    if (!json_is_object (v))
      return pgd_error (err, 0, "%s[%zu] is not an object", key, i);
    if (field (v, key, i, "container_id", &m->container_id, err) < 0
        || field (v, key, i, "host_id", &m->host_id, err) < 0
        || field (v, key, i, "size", &m->size, err) < 0)
      return -1;
    *n = i + 1;
  }
  return 0;
}

static int
opts_decode (json_t *root, struct pgd_init_req *req, struct pgd_err *err)
{
  json_t *opts = json_object_get (root, "Opts");
  size_t i;
  json_t *v;

  if (opts == NULL || json_is_null (opts))
    return 0;
  if (!json_is_array (opts))
    return pgd_error (err, 0, "Opts is not an array");
  if (json_array_size (opts) == 0)
    return 0;
  req->opts = calloc (json_array_size (opts), sizeof *req->opts);
  if (req->opts == NULL)
    return pgd_error (err, ENOMEM, "Opts");
  json_array_foreach (opts, i, v)
  {
    if (!json_is_string (v))
      return pgd_error (err, 0, "Opts[%zu] is not a string", i);
    req->opts[i] = (char *)json_string_value (v);
    req->nopts = i + 1;
  }
  return 0;
}

int
pgd_init_decode_fields (json_t *root, struct pgd_init_req *req, struct pgd_err *err)
{
  if (opts_decode (root, req, err) < 0
      || idmaps_decode (root, "UIDMaps", &req->maps.uid, &req->maps.nuid, err) < 0
      || idmaps_decode (root, "GIDMaps", &req->maps.gid, &req->maps.ngid, err) < 0)
    return -1;
  return 0;
}
