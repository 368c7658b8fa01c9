/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The graphdriver interface the HTTP layer calls: one operation per endpoint.
   It knows nothing of HTTP; every failure comes back as a struct pgd_err. */
#ifndef PGD_DRIVER_H
#define PGD_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* One key/value pair (StorageOpt, Status lines, Metadata). */
struct pgd_kv
{
  char *key;
  char *value;
};

/* A growable list of pairs; free with pgd_kvlist_free. */
struct pgd_kvlist
{
  struct pgd_kv *items;
  size_t n;
};

/* One range of a user-namespace ID map (Init's UIDMaps/GIDMaps). */
struct pgd_idmap
{
  uint32_t container_id;
  uint32_t host_id;
  uint32_t size;
};

/* The UID and GID maps; n == 0 means identity. */
struct pgd_idmaps
{
  struct pgd_idmap *uid;
  size_t nuid;
  struct pgd_idmap *gid;
  size_t ngid;
};

/* GraphDriver.Init. */
struct pgd_init_req
{
  const char *home;
  char **opts;
  size_t nopts;
  struct pgd_idmaps maps;
};

/* GraphDriver.Create / CreateReadWrite. PARENT and MOUNT_LABEL may be NULL. */
struct pgd_create_req
{
  const char *id;
  const char *parent;
  const char *mount_label;
  const struct pgd_kv *storage_opt;
  size_t nstorage_opt;
  bool rw;
};

enum pgd_change_kind
{
  PGD_CHANGE_MODIFY = 0,
  PGD_CHANGE_ADD = 1,
  PGD_CHANGE_DELETE = 2,
};

/* One entry of Changes: absolute path and kind. */
struct pgd_change
{
  char *path;
  enum pgd_change_kind kind;
};

/* A list of changes in emission order; free with pgd_changes_free. */
struct pgd_changes
{
  struct pgd_change *items;
  size_t n;
  size_t cap;
};

/* The operation table. CTX is the driver object; every op is thread-safe and
   returns 0 or -1 with ERR filled. IDs reach the ops already validated. */
struct pgd_ops
{
  int (*init) (void *ctx, const struct pgd_init_req *req, struct pgd_err *err);
  int (*create) (void *ctx, const struct pgd_create_req *req, struct pgd_err *err);
  int (*remove) (void *ctx, const char *id, struct pgd_err *err);
  /* *DIR is malloc'd; the same ID always yields the same path. */
  int (*get) (void *ctx, const char *id, const char *mount_label, char **dir, struct pgd_err *err);
  int (*put) (void *ctx, const char *id, struct pgd_err *err);
  int (*exists) (void *ctx, const char *id, bool *exists, struct pgd_err *err);
  int (*status) (void *ctx, struct pgd_kvlist *out, struct pgd_err *err);
  int (*metadata) (void *ctx, const char *id, struct pgd_kvlist *out, struct pgd_err *err);
  int (*cleanup) (void *ctx, struct pgd_err *err);
  /* Diff in two steps so that errors before the first byte become a non-200:
     diff_open prepares (mounts, checks) and returns a stream handle; diff_write
     writes the whole tar to FD (blocking) and may fail midway; diff_close
     releases the handle whether or not diff_write ran. */
  int (*diff_open) (void *ctx, const char *id, const char *parent, void **stream,
                    struct pgd_err *err);
  int (*diff_write) (void *stream, int fd, struct pgd_err *err);
  void (*diff_close) (void *stream);
  int (*changes) (void *ctx, const char *id, const char *parent, struct pgd_changes *out,
                  struct pgd_err *err);
  /* Reads the tar from FD until EOF (the caller feeds it and closes its end). */
  int (*apply_diff) (void *ctx, const char *id, const char *parent, int fd, int64_t *size,
                     struct pgd_err *err);
  int (*diff_size) (void *ctx, const char *id, const char *parent, int64_t *size,
                    struct pgd_err *err);
};

/* Append a copy of KEY/VALUE to LIST. */
int pgd_kvlist_add (struct pgd_kvlist *list, const char *key, const char *value,
                    struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Free every pair of LIST and reset it to empty. */
void pgd_kvlist_free (struct pgd_kvlist *list);

/* Append a copy of PATH with KIND to LIST. */
int pgd_changes_add (struct pgd_changes *list, const char *path, enum pgd_change_kind kind,
                     struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Free every entry of LIST and reset it to empty. */
void pgd_changes_free (struct pgd_changes *list);

/* Map a container ID to the host through MAP (identity when empty); -1 when unmapped. */
int64_t pgd_idmap_to_host (const struct pgd_idmap *map, size_t n, uint32_t id);

/* Map a host ID back to the container; -1 when unmapped. */
int64_t pgd_idmap_to_container (const struct pgd_idmap *map, size_t n, uint32_t id);

#endif
