/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Request life cycle: classify on the first call, consume the body on the next ones
   (buffered JSON, or a tar piped to ApplyDiff), answer on the last one. An error found
   early is kept until the body has been read to its end (PROTOCOL.md §4.3, App. B). */
#include "routes.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"
#include "proto.h"
#include "request.h"
#include "stream.h"
#include "util.h"

#define JSON_TYPE "application/vnd.docker.plugins.v1+json"

/* A JSON endpoint: decode BODY, call the driver, encode the answer into *OUT. */
typedef int (*json_fn) (struct pgd_routes *r, const char *body, size_t len, char **out,
                        struct pgd_err *err);

enum route_kind
{
  ROUTE_JSON,
  ROUTE_APPLY,
  ROUTE_DIFF,
};

struct route
{
  const char *path;
  enum route_kind kind;
  json_fn fn;
};

/* One request, from its first call to the completed callback. */
struct request
{
  struct pgd_routes *r;
  const struct route *route; /* NULL for an unknown path */
  unsigned fail_status;      /* non-zero: answer ERR with it once the body is read */
  struct pgd_err err;
  char *body;
  size_t len;
  size_t cap;
  bool too_large;
  bool answered;
  struct pgd_apply *apply;
};

/* Fail unless the driver implements OP. */
#define NEED_OP(r, op, name)                                                                       \
  do                                                                                               \
    {                                                                                              \
      if ((r)->ops->op == NULL)                                                                    \
        return pgd_error (err, 0, "%s is not implemented", (name));                                \
    }                                                                                              \
  while (0)

static int
do_activate (struct pgd_routes *r, const char *body, size_t len, char **out, struct pgd_err *err)
{
  (void)r, (void)body, (void)len, (void)err;
  *out = pgd_proto_encode_activate ();
  return 0;
}

static int
do_capabilities (struct pgd_routes *r, const char *body, size_t len, char **out,
                 struct pgd_err *err)
{
  (void)r;
  if (pgd_proto_decode_empty (body, len, err) < 0)
    return -1;
  *out = pgd_proto_encode_capabilities ();
  return 0;
}

static int
do_init (struct pgd_routes *r, const char *body, size_t len, char **out, struct pgd_err *err)
{
  struct pgd_proto_init_req req;
  int ret;

  if (pgd_proto_decode_init (body, len, &req, err) < 0)
    return -1;
  if (r->ops->init == NULL)
    ret = pgd_error (err, 0, "Init is not implemented");
  else
    ret = r->ops->init (r->ctx, &req.req, err);
  pgd_proto_init_req_free (&req);
  if (ret == 0)
    *out = pgd_proto_encode_empty ();
  return ret;
}

/* Status and Cleanup: no arguments, but the body must still be a JSON object. */
static int
do_status (struct pgd_routes *r, const char *body, size_t len, char **out, struct pgd_err *err)
{
  struct pgd_kvlist status = { 0 };

  if (pgd_proto_decode_empty (body, len, err) < 0)
    return -1;
  NEED_OP (r, status, "Status");
  if (r->ops->status (r->ctx, &status, err) < 0)
    {
      pgd_kvlist_free (&status);
      return -1;
    }
  *out = pgd_proto_encode_status (&status);
  pgd_kvlist_free (&status);
  return 0;
}

static int
do_cleanup (struct pgd_routes *r, const char *body, size_t len, char **out, struct pgd_err *err)
{
  if (pgd_proto_decode_empty (body, len, err) < 0)
    return -1;
  NEED_OP (r, cleanup, "Cleanup");
  /* a Diff still streaming holds its layers: Cleanup would skip them and answer while
     they stay mounted */
  (void)pgd_routes_drain_streams (r, "Cleanup");
  if (r->ops->cleanup (r->ctx, err) < 0)
    return -1;
  *out = pgd_proto_encode_empty ();
  return 0;
}

/* The per-layer endpoints share decoding; CALL runs the one operation. */
typedef int (*layer_call) (struct pgd_routes *r, const struct pgd_proto_layer_req *req, char **out,
                           struct pgd_err *err);

static int
with_layer (struct pgd_routes *r, const char *body, size_t len, char **out, struct pgd_err *err,
            layer_call call)
{
  struct pgd_proto_layer_req req;
  int ret;

  if (pgd_proto_decode_layer (body, len, &req, err) < 0)
    return -1;
  ret = call (r, &req, out, err);
  pgd_proto_layer_req_free (&req);
  return ret;
}

static int
call_create (struct pgd_routes *r, const struct pgd_proto_layer_req *req, bool rw, char **out,
             struct pgd_err *err)
{
  struct pgd_create_req creq;

  NEED_OP (r, create, rw ? "CreateReadWrite" : "Create");
  pgd_proto_create_req (req, rw, &creq);
  if (r->ops->create (r->ctx, &creq, err) < 0)
    return -1;
  *out = pgd_proto_encode_empty ();
  return 0;
}

static int
call_create_ro (struct pgd_routes *r, const struct pgd_proto_layer_req *req, char **out,
                struct pgd_err *err)
{
  return call_create (r, req, false, out, err);
}

static int
call_create_rw (struct pgd_routes *r, const struct pgd_proto_layer_req *req, char **out,
                struct pgd_err *err)
{
  return call_create (r, req, true, out, err);
}

static int
call_remove (struct pgd_routes *r, const struct pgd_proto_layer_req *req, char **out,
             struct pgd_err *err)
{
  NEED_OP (r, remove, "Remove");
  if (r->ops->remove (r->ctx, req->id, err) < 0)
    return -1;
  *out = pgd_proto_encode_empty ();
  return 0;
}

static int
call_get (struct pgd_routes *r, const struct pgd_proto_layer_req *req, char **out,
          struct pgd_err *err)
{
  cleanup_free char *dir = NULL;

  NEED_OP (r, get, "Get");
  if (r->ops->get (r->ctx, req->id, req->mount_label, &dir, err) < 0)
    return -1;
  *out = pgd_proto_encode_dir (dir);
  return 0;
}

static int
call_put (struct pgd_routes *r, const struct pgd_proto_layer_req *req, char **out,
          struct pgd_err *err)
{
  NEED_OP (r, put, "Put");
  if (r->ops->put (r->ctx, req->id, err) < 0)
    return -1;
  *out = pgd_proto_encode_empty ();
  return 0;
}

static int
call_exists (struct pgd_routes *r, const struct pgd_proto_layer_req *req, char **out,
             struct pgd_err *err)
{
  bool exists = false;

  NEED_OP (r, exists, "Exists");
  if (r->ops->exists (r->ctx, req->id, &exists, err) < 0)
    return -1;
  *out = pgd_proto_encode_exists (exists);
  return 0;
}

static int
call_metadata (struct pgd_routes *r, const struct pgd_proto_layer_req *req, char **out,
               struct pgd_err *err)
{
  struct pgd_kvlist md = { 0 };

  NEED_OP (r, metadata, "GetMetadata");
  if (r->ops->metadata (r->ctx, req->id, &md, err) < 0)
    {
      pgd_kvlist_free (&md);
      return -1;
    }
  *out = pgd_proto_encode_metadata (&md);
  pgd_kvlist_free (&md);
  return 0;
}

static int
call_changes (struct pgd_routes *r, const struct pgd_proto_layer_req *req, char **out,
              struct pgd_err *err)
{
  struct pgd_changes changes = { 0 };

  NEED_OP (r, changes, "Changes");
  if (r->ops->changes (r->ctx, req->id, req->parent, &changes, err) < 0)
    {
      pgd_changes_free (&changes);
      return -1;
    }
  *out = pgd_proto_encode_changes (&changes);
  pgd_changes_free (&changes);
  return 0;
}

static int
call_diff_size (struct pgd_routes *r, const struct pgd_proto_layer_req *req, char **out,
                struct pgd_err *err)
{
  int64_t size = 0;

  NEED_OP (r, diff_size, "DiffSize");
  if (r->ops->diff_size (r->ctx, req->id, req->parent, &size, err) < 0)
    return -1;
  *out = pgd_proto_encode_size (size);
  return 0;
}

#define LAYER_ROUTE(fn_name, call)                                                                 \
  static int fn_name (struct pgd_routes *r, const char *body, size_t len, char **out,              \
                      struct pgd_err *err)                                                         \
  {                                                                                                \
    return with_layer (r, body, len, out, err, call);                                              \
  }

LAYER_ROUTE (do_create, call_create_ro)
LAYER_ROUTE (do_create_rw, call_create_rw)
LAYER_ROUTE (do_remove, call_remove)
LAYER_ROUTE (do_get, call_get)
LAYER_ROUTE (do_put, call_put)
LAYER_ROUTE (do_exists, call_exists)
LAYER_ROUTE (do_metadata, call_metadata)
LAYER_ROUTE (do_changes, call_changes)
LAYER_ROUTE (do_diff_size, call_diff_size)

static const struct route routes[] = {
  { "/Plugin.Activate", ROUTE_JSON, do_activate },
  { "/GraphDriver.Init", ROUTE_JSON, do_init },
  { "/GraphDriver.Create", ROUTE_JSON, do_create },
  { "/GraphDriver.CreateReadWrite", ROUTE_JSON, do_create_rw },
  { "/GraphDriver.Remove", ROUTE_JSON, do_remove },
  { "/GraphDriver.Get", ROUTE_JSON, do_get },
  { "/GraphDriver.Put", ROUTE_JSON, do_put },
  { "/GraphDriver.Exists", ROUTE_JSON, do_exists },
  { "/GraphDriver.Status", ROUTE_JSON, do_status },
  { "/GraphDriver.GetMetadata", ROUTE_JSON, do_metadata },
  { "/GraphDriver.Cleanup", ROUTE_JSON, do_cleanup },
  { "/GraphDriver.Diff", ROUTE_DIFF, NULL },
  { "/GraphDriver.Changes", ROUTE_JSON, do_changes },
  { "/GraphDriver.ApplyDiff", ROUTE_APPLY, NULL },
  { "/GraphDriver.DiffSize", ROUTE_JSON, do_diff_size },
  { "/GraphDriver.Capabilities", ROUTE_JSON, do_capabilities },
};

static const struct route *
find_route (const char *url)
{
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
    if (strcmp (routes[i].path, url) == 0)
      return &routes[i];
  return NULL;
}

/* pgd_routes_reply, plus an Allow header when ALLOW is not NULL. */
static enum MHD_Result
reply_full (struct MHD_Connection *conn, unsigned status, char *body, const char *allow)
{
  static const char oom[] = "{\"Err\":\"out of memory\"}";
  struct MHD_Response *resp = NULL;
  enum MHD_Result ret;

  if (body != NULL)
    {
      resp = MHD_create_response_from_buffer (strlen (body), body, MHD_RESPMEM_MUST_FREE);
      if (resp == NULL)
        free (body);
    }
  if (resp == NULL)
    {
      status = MHD_HTTP_INTERNAL_SERVER_ERROR;
      resp = MHD_create_response_from_buffer (sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
      if (resp == NULL)
        return MHD_NO;
    }
  MHD_add_response_header (resp, MHD_HTTP_HEADER_CONTENT_TYPE, JSON_TYPE);
  MHD_add_response_header (resp, MHD_HTTP_HEADER_CONNECTION, "close");
  if (allow != NULL)
    MHD_add_response_header (resp, MHD_HTTP_HEADER_ALLOW, allow);
  ret = MHD_queue_response (conn, status, resp);
  MHD_destroy_response (resp);
  return ret;
}

enum MHD_Result
pgd_routes_reply (struct MHD_Connection *conn, unsigned status, char *body)
{
  return reply_full (conn, status, body, NULL);
}

/* Answer {"Err": ERR} with STATUS and log it. */
static enum MHD_Result
reply_err (struct MHD_Connection *conn, const char *url, unsigned status, const struct pgd_err *err)
{
  const char *allow = status == MHD_HTTP_METHOD_NOT_ALLOWED ? MHD_HTTP_METHOD_POST : NULL;

  pgd_log (status >= 500 ? PGD_LOG_WARN : PGD_LOG_INFO, "%s: %u %s", url, status, err->msg);
  return reply_full (conn, status, pgd_proto_encode_err (err->msg), allow);
}

/* Record the first failure; the answer waits for the end of the body. */
static void
request_fail (struct request *req, unsigned status)
{
  if (req->fail_status == 0)
    req->fail_status = status;
}

/* ApplyDiff: id and parent come from the query string; "parent=" means none. */
static int
apply_begin (struct request *req, struct MHD_Connection *conn)
{
  const char *id = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, "id");
  const char *parent = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, "parent");

  if (id == NULL)
    return pgd_error (&req->err, 0, "missing id in the query string");
  if (!pgd_id_valid (id, &req->err))
    return -1;
  if (parent && parent[0] == '\0')
    parent = NULL;
  if (parent && !pgd_id_valid (parent, &req->err))
    return pgd_error_wrap (&req->err, "parent");
  return pgd_apply_start (&req->apply, req->r, id, parent, &req->err);
}

static struct request *
request_new (struct pgd_routes *r, struct MHD_Connection *conn, const char *url, const char *method)
{
  struct request *req = calloc (1, sizeof *req);

  if (req == NULL)
    return NULL;
  req->r = r;
  req->route = find_route (url);
  if (req->route == NULL)
    {
      pgd_error (&req->err, 0, "unknown path %s", url);
      request_fail (req, MHD_HTTP_NOT_FOUND);
    }
  else if (strcmp (method, MHD_HTTP_METHOD_POST) != 0)
    {
      pgd_error (&req->err, 0, "method %s not allowed on %s: use POST", method, url);
      request_fail (req, MHD_HTTP_METHOD_NOT_ALLOWED);
    }
  else if (req->route->kind == ROUTE_APPLY && apply_begin (req, conn) < 0)
    request_fail (req, MHD_HTTP_INTERNAL_SERVER_ERROR);
  return req;
}

static void
request_free (struct request *req)
{
  pgd_apply_free (req->apply);
  free (req->body);
  free (req);
}

/* Take one piece of the body: to the ApplyDiff pipe, into the JSON buffer, or away. */
static void
request_consume (struct request *req, const char *data, size_t len)
{
  if (req->fail_status != 0 || req->too_large)
    return;
  if (req->apply)
    {
      pgd_apply_feed (req->apply, data, len);
      return;
    }
  if (len > PGD_PROTO_BODY_MAX - req->len)
    {
      req->too_large = true;
      free (req->body);
      req->body = NULL;
      req->len = req->cap = 0;
      return;
    }
  if (req->len + len > req->cap)
    {
      size_t cap = req->cap ? req->cap : 256;
      while (cap < req->len + len)
        cap *= 2;
      char *n = realloc (req->body, cap);
      if (n == NULL)
        {
          pgd_error (&req->err, ENOMEM, "request body");
          request_fail (req, MHD_HTTP_INTERNAL_SERVER_ERROR);
          return;
        }
      req->body = n;
      req->cap = cap;
    }
  memcpy (req->body + req->len, data, len);
  req->len += len;
}

/* The whole body has been read: answer. */
static enum MHD_Result
request_answer (struct request *req, struct MHD_Connection *conn, const char *url)
{
  char *out = NULL;

  if (req->fail_status != 0)
    return reply_err (conn, url, req->fail_status, &req->err);
  if (req->too_large)
    {
      pgd_error (&req->err, 0, "request body too large (more than %d bytes)", PGD_PROTO_BODY_MAX);
      return reply_err (conn, url, MHD_HTTP_INTERNAL_SERVER_ERROR, &req->err);
    }
  if (req->route->kind == ROUTE_APPLY)
    {
      int64_t size = 0;
      if (pgd_apply_finish (req->apply, &size, &req->err) < 0)
        return reply_err (conn, url, MHD_HTTP_INTERNAL_SERVER_ERROR, &req->err);
      pgd_log (PGD_LOG_DEBUG, "%s: 200 Size %lld", url, (long long)size);
      return pgd_routes_reply (conn, MHD_HTTP_OK, pgd_proto_encode_size (size));
    }
  if (req->route->kind == ROUTE_DIFF)
    {
      struct pgd_proto_layer_req lreq;
      struct MHD_Response *resp = NULL;
      enum MHD_Result ret;

      if (pgd_proto_decode_layer (req->body, req->len, &lreq, &req->err) < 0)
        return reply_err (conn, url, MHD_HTTP_INTERNAL_SERVER_ERROR, &req->err);
      int rc = pgd_diff_response (req->r, conn, lreq.id, lreq.parent, &resp, &req->err);
      pgd_proto_layer_req_free (&lreq);
      if (rc < 0)
        return reply_err (conn, url, MHD_HTTP_INTERNAL_SERVER_ERROR, &req->err);
      MHD_add_response_header (resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-tar");
      MHD_add_response_header (resp, MHD_HTTP_HEADER_CONNECTION, "close");
      ret = MHD_queue_response (conn, MHD_HTTP_OK, resp);
      MHD_destroy_response (resp);
      pgd_log (PGD_LOG_DEBUG, "%s: 200 streaming", url);
      return ret;
    }
  /* a call that waits (a claim held by a stuck unmount) stops before it changes
     anything once its client has hung up */
  const union MHD_ConnectionInfo *ci
      = MHD_get_connection_info (conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  pgd_request_attach (ci ? ci->connect_fd : -1);
  int rc = req->route->fn (req->r, req->body, req->len, &out, &req->err);
  pgd_request_detach ();
  if (rc < 0)
    return reply_err (conn, url, MHD_HTTP_INTERNAL_SERVER_ERROR, &req->err);
  pgd_log (PGD_LOG_DEBUG, "%s: 200", url);
  return pgd_routes_reply (conn, MHD_HTTP_OK, out);
}

enum MHD_Result
pgd_routes_handle (void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                   const char *version, const char *upload_data, size_t *upload_data_size,
                   void **req_cls)
{
  struct request *req = *req_cls;

  (void)version;
  if (req == NULL)
    {
      req = request_new (cls, conn, url, method);
      if (req == NULL)
        return MHD_NO;
      *req_cls = req;
      if (*upload_data_size == 0)
        return MHD_YES;
    }
  if (*upload_data_size > 0)
    {
      request_consume (req, upload_data, *upload_data_size);
      *upload_data_size = 0;
      return MHD_YES;
    }
  if (req->answered)
    return MHD_YES;
  req->answered = true;
  /* shutdown waits (a while) for driver calls, not for clients that are slow to send */
  pgd_routes_hold (req->r);
  enum MHD_Result ret = request_answer (req, conn, url);
  pgd_routes_release (req->r);
  return ret;
}

void
pgd_routes_completed (void *cls, struct MHD_Connection *conn, void **req_cls,
                      enum MHD_RequestTerminationCode toe)
{
  struct request *req = *req_cls;

  (void)cls, (void)conn;
  if (req == NULL)
    return;
  if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
    pgd_log (PGD_LOG_DEBUG, "%s: connection ended before the request completed (%d)",
             req->route ? req->route->path : "request", (int)toe);
  *req_cls = NULL;
  request_free (req);
}
