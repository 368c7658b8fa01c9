/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The JSON codec of the GraphDriver protocol (PROTOCOL.md §2.3, §2.4, §5). */
#include "proto.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>

#include "initjson.h"
#include "util.h"

/* jansson's json_auto_t (json_t released at end of scope) under our naming */
#define cleanup_json __attribute__ ((cleanup (json_decrefp)))

/* Parse BODY and require one JSON object; dockerd's trailing '\n' is fine. */
static int
parse_object (const char *body, size_t len, json_t **out, struct pgd_err *err)
{
  json_error_t jerr;
  json_t *root;

  *out = NULL;
  if (body == NULL || len == 0)
    return pgd_error (err, 0, "empty request body");
  /* DECODE_ANY: a bare string or number is valid JSON, just not an object */
  root = json_loadb (body, len, JSON_DECODE_ANY, &jerr);
  if (root == NULL)
    return pgd_error (err, 0, "request body is not valid JSON: %s (line %d, column %d)", jerr.text,
                      jerr.line, jerr.column);
  if (!json_is_object (root))
    {
      json_decref (root);
      return pgd_error (err, 0, "request body is not a JSON object");
    }
  *out = root;
  return 0;
}

/* Fetch the optional string KEY of OBJ into *OUT (NULL when absent or null). */
static int
opt_string (json_t *obj, const char *key, const char **out, struct pgd_err *err)
{
  json_t *v = json_object_get (obj, key);

  *out = NULL;
  if (v == NULL || json_is_null (v))
    return 0;
  if (!json_is_string (v))
    return pgd_error (err, 0, "%s is not a string", key);
  *out = json_string_value (v);
  return 0;
}

int
pgd_proto_decode_empty (const char *body, size_t len, struct pgd_err *err)
{
  cleanup_json json_t *root = NULL;

  return parse_object (body, len, &root, err);
}

static int
decode_storage_opt (json_t *root, struct pgd_kvlist *out, struct pgd_err *err)
{
  json_t *opts = json_object_get (root, "StorageOpt");
  const char *key;
  json_t *v;

  if (opts == NULL || json_is_null (opts))
    return 0;
  if (!json_is_object (opts))
    return pgd_error (err, 0, "StorageOpt is not an object");
  json_object_foreach (opts, key, v)
  {
    if (!json_is_string (v))
      return pgd_error (err, 0, "StorageOpt %s is not a string", key);
    if (pgd_kvlist_add (out, key, json_string_value (v), err) < 0)
      return -1;
  }
  return 0;
}

int
pgd_proto_decode_layer (const char *body, size_t len, struct pgd_proto_layer_req *out,
                        struct pgd_err *err)
{
  cleanup_json json_t *root = NULL;
  struct pgd_proto_layer_req req = { 0 };
  json_t *id;

  memset (out, 0, sizeof *out);
  if (parse_object (body, len, &root, err) < 0)
    return -1;
  id = json_object_get (root, "ID");
  if (id == NULL || json_is_null (id))
    return pgd_error (err, 0, "missing ID");
  if (!json_is_string (id))
    return pgd_error (err, 0, "ID is not a string");
  req.id = json_string_value (id);
  if (!pgd_id_valid (req.id, err))
    return -1;
  if (opt_string (root, "Parent", &req.parent, err) < 0)
    return -1;
  /* Go leaves "" out; treat a literal "" like the absent key: no parent */
  if (req.parent && req.parent[0] == '\0')
    req.parent = NULL;
  if (req.parent && !pgd_id_valid (req.parent, err))
    return pgd_error_wrap (err, "Parent");
  if (opt_string (root, "MountLabel", &req.mount_label, err) < 0)
    return -1;
  if (decode_storage_opt (root, &req.storage_opt, err) < 0)
    {
      pgd_kvlist_free (&req.storage_opt);
      return -1;
    }
  req.doc = root;
  root = NULL;
  *out = req;
  return 0;
}

void
pgd_proto_layer_req_free (struct pgd_proto_layer_req *req)
{
  pgd_kvlist_free (&req->storage_opt);
  json_decref (req->doc);
  memset (req, 0, sizeof *req);
}

void
pgd_proto_create_req (const struct pgd_proto_layer_req *in, bool rw, struct pgd_create_req *out)
{
  memset (out, 0, sizeof *out);
  out->id = in->id;
  out->parent = in->parent;
  out->mount_label = in->mount_label;
  out->storage_opt = in->storage_opt.items;
  out->nstorage_opt = in->storage_opt.n;
  out->rw = rw;
}

int
pgd_proto_decode_init (const char *body, size_t len, struct pgd_proto_init_req *out,
                       struct pgd_err *err)
{
  cleanup_json json_t *root = NULL;
  struct pgd_proto_init_req r = { 0 };
  const char *home;

  memset (out, 0, sizeof *out);
  if (parse_object (body, len, &root, err) < 0)
    return -1;
  if (opt_string (root, "Home", &home, err) < 0)
    return -1;
  if (home == NULL)
    return pgd_error (err, 0, "missing Home");
  if (home[0] == '\0')
    return pgd_error (err, 0, "Home is empty");
  r.req.home = home;
  /* the Opts strings belong to the document, which outlives the request */
  if (pgd_init_decode_fields (root, &r.req, err) < 0)
    {
      pgd_proto_init_req_free (&r);
      return -1;
    }
  r.doc = root;
  root = NULL;
  *out = r;
  return 0;
}

void
pgd_proto_init_req_free (struct pgd_proto_init_req *req)
{
  free (req->req.opts);
  free (req->req.maps.uid);
  free (req->req.maps.gid);
  json_decref (req->doc);
  memset (req, 0, sizeof *req);
}

/* A malloc'd copy of S with every non-ASCII byte replaced by '?'. */
static char *
ascii_copy (const char *s)
{
  char *copy = strdup (s);

  for (char *p = copy; p && *p; p++)
    if ((unsigned char)*p >= 0x80)
      *p = '?';
  return copy;
}

/* A JSON string of S; when S is not valid UTF-8 its non-ASCII bytes become '?'. */
static json_t *
string_lossy (const char *s)
{
  json_t *j = json_string (s);
  cleanup_free char *copy = NULL;

  if (j != NULL || s == NULL)
    return j;
  copy = ascii_copy (s);
  return copy ? json_string (copy) : NULL;
}

/* OBJ[KEY] = VALUE (stolen); a KEY that is not valid UTF-8 is made ASCII. */
static int
set_lossy (json_t *obj, const char *key, json_t *value)
{
  cleanup_free char *copy = NULL;

  if (value == NULL)
    return -1;
  if (json_object_set (obj, key, value) == 0)
    {
      json_decref (value);
      return 0;
    }
  copy = ascii_copy (key);
  if (copy == NULL)
    {
      json_decref (value);
      return -1;
    }
  return json_object_set_new (obj, copy, value);
}

/* Dump ROOT compactly and drop it; NULL ROOT (out of memory) gives NULL. */
static char *
dump (json_t *root)
{
  char *text;

  if (root == NULL)
    return NULL;
  text = json_dumps (root, JSON_COMPACT);
  json_decref (root);
  return text;
}

/* {KEY: VALUE}, consuming VALUE. */
static char *
dump_one (const char *key, json_t *value)
{
  json_t *root;

  if (value == NULL)
    return NULL;
  root = json_object ();
  if (root == NULL)
    {
      json_decref (value);
      return NULL;
    }
  if (json_object_set_new (root, key, value) < 0)
    {
      json_decref (root);
      return NULL;
    }
  return dump (root);
}

char *
pgd_proto_encode_err (const char *msg)
{
  return dump_one ("Err", string_lossy (msg));
}

char *
pgd_proto_encode_empty (void)
{
  return dump (json_object ());
}

char *
pgd_proto_encode_activate (void)
{
  return dump (json_pack ("{s:[s]}", "Implements", "GraphDriver"));
}

char *
pgd_proto_encode_capabilities (void)
{
  return dump (json_pack ("{s:{s:b}}", "Capabilities", "ReproducesExactDiffs", 0));
}

char *
pgd_proto_encode_dir (const char *dir)
{
  return dump_one ("Dir", string_lossy (dir));
}

char *
pgd_proto_encode_exists (bool exists)
{
  return dump_one ("Exists", json_boolean (exists));
}

char *
pgd_proto_encode_size (int64_t size)
{
  return dump_one ("Size", json_integer ((json_int_t)size));
}

char *
pgd_proto_encode_status (const struct pgd_kvlist *status)
{
  json_t *arr = json_array ();

  for (size_t i = 0; arr && i < status->n; i++)
    {
      json_t *pair = json_array ();
      /* PAIR belongs to ARR at once, so one decref of ARR frees everything */
      if (json_array_append_new (arr, pair) < 0
          || json_array_append_new (pair, string_lossy (status->items[i].key)) < 0
          || json_array_append_new (pair, string_lossy (status->items[i].value)) < 0)
        {
          json_decref (arr);
          return NULL;
        }
    }
  return dump_one ("Status", arr);
}

char *
pgd_proto_encode_metadata (const struct pgd_kvlist *metadata)
{
  json_t *obj = json_object ();

  for (size_t i = 0; obj && i < metadata->n; i++)
    if (set_lossy (obj, metadata->items[i].key, string_lossy (metadata->items[i].value)) < 0)
      {
        json_decref (obj);
        return NULL;
      }
  return dump_one ("Metadata", obj);
}

char *
pgd_proto_encode_changes (const struct pgd_changes *changes)
{
  json_t *arr = json_array ();

  for (size_t i = 0; arr && i < changes->n; i++)
    {
      json_t *c = json_object ();
      if (json_array_append_new (arr, c) < 0
          || json_object_set_new (c, "Path", string_lossy (changes->items[i].path)) < 0
          || json_object_set_new (c, "Kind", json_integer (changes->items[i].kind)) < 0)
        {
          json_decref (arr);
          return NULL;
        }
    }
  return dump_one ("Changes", arr);
}
