/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The store's operation table (driver.h). Every ID and parent is checked here, where
   the store starts building paths from them: the HTTP face, the CLI, the snapshotter
   and the tests all come through this table. */
#include "internal.h"
#include "util.h"

/* IDs of one request: ID must be valid; PARENT too when given ("" is no parent). */
static int
check_ids (const char *id, const char *parent, struct pgd_err *err)
{
  if (!pgd_id_valid (id, err))
    return -1;
  if (parent && parent[0] && !pgd_id_valid (parent, err))
    return pgd_error_wrap (err, "parent of %s", id);
  return 0;
}

static int
op_init (void *ctx, const struct pgd_init_req *req, struct pgd_err *err)
{
  /* dockerd sends Init once, before any other call: no layer of the old Home can be
     taken between leaving it and serving the new one */
  if (req->home && pgd_store_leave_home (ctx, req->home, err) < 0)
    return -1;
  return pgd_store_init (ctx, req, true, err);
}

static int
op_create (void *ctx, const struct pgd_create_req *req, struct pgd_err *err)
{
  if (check_ids (req->id, req->parent, err) < 0)
    return -1;
  return pgd_store_create (ctx, req, err);
}

static int
op_remove (void *ctx, const char *id, struct pgd_err *err)
{
  if (check_ids (id, NULL, err) < 0)
    return -1;
  return pgd_store_remove (ctx, id, err);
}

static int
op_get (void *ctx, const char *id, const char *mount_label, char **dir, struct pgd_err *err)
{
  if (check_ids (id, NULL, err) < 0)
    return -1;
  return pgd_store_get (ctx, id, mount_label, dir, err);
}

static int
op_put (void *ctx, const char *id, struct pgd_err *err)
{
  if (check_ids (id, NULL, err) < 0)
    return -1;
  return pgd_store_put (ctx, id, err);
}

static int
op_exists (void *ctx, const char *id, bool *exists, struct pgd_err *err)
{
  if (check_ids (id, NULL, err) < 0)
    return -1;
  return pgd_store_exists (ctx, id, exists, err);
}

static int
op_metadata (void *ctx, const char *id, struct pgd_kvlist *out, struct pgd_err *err)
{
  if (check_ids (id, NULL, err) < 0)
    return -1;
  return pgd_store_metadata (ctx, id, out, err);
}

/* Unmount every layer nobody holds. */
static int
op_cleanup (void *ctx, struct pgd_err *err)
{
  (void)err;
  pgd_layers_shutdown (ctx);
  return 0;
}

static int
op_diff_open (void *ctx, const char *id, const char *parent, void **stream, struct pgd_err *err)
{
  if (check_ids (id, parent, err) < 0)
    return -1;
  return pgd_layers_diff_open (ctx, id, parent, stream, err);
}

static int
op_changes (void *ctx, const char *id, const char *parent, struct pgd_changes *out,
            struct pgd_err *err)
{
  if (check_ids (id, parent, err) < 0)
    return -1;
  return pgd_layers_changes (ctx, id, parent, out, err);
}

static int
op_apply_diff (void *ctx, const char *id, const char *parent, int fd, int64_t *size,
               struct pgd_err *err)
{
  if (check_ids (id, parent, err) < 0)
    return -1;
  return pgd_layers_apply_diff (ctx, id, parent, fd, size, err);
}

static int
op_diff_size (void *ctx, const char *id, const char *parent, int64_t *size, struct pgd_err *err)
{
  if (check_ids (id, parent, err) < 0)
    return -1;
  return pgd_layers_diff_size (ctx, id, parent, size, err);
}

const struct pgd_ops pgd_layers_ops = {
  .init = op_init,
  .create = op_create,
  .remove = op_remove,
  .get = op_get,
  .put = op_put,
  .exists = op_exists,
  .status = pgd_store_status,
  .metadata = op_metadata,
  .cleanup = op_cleanup,
  .diff_open = op_diff_open,
  .diff_write = pgd_layers_diff_write,
  .diff_close = pgd_layers_diff_close,
  .changes = op_changes,
  .apply_diff = op_apply_diff,
  .diff_size = op_diff_size,
};
