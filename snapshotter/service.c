/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The Snapshots service (service.h). Each handler checks its input, then works in
   three steps: under the registry lock it checks and reserves (a new record is
   "creating", a record being committed or removed is "busy"); outside the lock it asks
   the layer store (clone, mount, unmount, remove: slow); under the lock again it makes
   the change visible and saves the registry, or undoes the reservation. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.pb-c.h"
#include "log.h"
#include "service.h"
#include "util.h"

typedef Containerd__Services__Snapshots__V1__Info Info;
typedef Containerd__Services__Snapshots__V1__Info__LabelsEntry Label;
typedef Containerd__Types__Mount Mount;
typedef Google__Protobuf__Timestamp Timestamp;

/* Every request's labels entry has the layout of Info's: one type serves them all. */
_Static_assert (sizeof (Containerd__Services__Snapshots__V1__PrepareSnapshotRequest__LabelsEntry)
                    == sizeof (Label)
                && sizeof (Containerd__Services__Snapshots__V1__ViewSnapshotRequest__LabelsEntry)
                       == sizeof (Label)
                && sizeof (Containerd__Services__Snapshots__V1__CommitSnapshotRequest__LabelsEntry)
                       == sizeof (Label),
                "labels entries differ");
#define LABELS(req) ((Label **) (req)->labels)

#define LIST_BATCH 100 /* snapshots per List message */


/* Unpack a request; a message that does not parse is INVALID_ARGUMENT. */
#define UNPACK(type, fn, buf, len, err)                                                  \
  ({                                                                                     \
    type *m_ = fn (NULL, len, buf);                                                      \
    if (m_ == NULL)                                                                      \
      pgd_error (err, EINVAL, "malformed %s", #type);                                    \
    m_;                                                                                  \
  })

/* Pack M and send it as the (next) reply. */
static int
reply (struct pgd_rpc_call *call, const ProtobufCMessage *m, struct pgd_err *err)
{
  size_t len = protobuf_c_message_get_packed_size (m);
  cleanup_free uint8_t *buf = malloc (len ? len : 1);

  if (buf == NULL)
    return pgd_error (err, ENOMEM, "reply");
  protobuf_c_message_pack (m, buf);
  return pgd_rpc_send (call, buf, len, err);
}

static bool
utf8_valid (const char *s)
{
  json_t *j = json_string (s); /* jansson checks UTF-8 */
  bool ok = j != NULL;
  json_decref (j);
  return ok;
}

/* A key or name: 1..PGD_SNAP_KEY_MAX bytes of UTF-8. */
static int
check_key (const char *key, const char *what, struct pgd_err *err)
{
  size_t n = key ? strlen (key) : 0;

  if (n == 0)
    return pgd_error (err, EINVAL, "%s is empty", what);
  if (n > PGD_SNAP_KEY_MAX)
    return pgd_error (err, EINVAL, "%s of %zu bytes: longer than %d", what, n, PGD_SNAP_KEY_MAX);
  if (!utf8_valid (key))
    return pgd_error (err, EINVAL, "%s is not UTF-8", what);
  return 0;
}

static int
check_label (const char *k, const char *v, struct pgd_err *err)
{
  if (k == NULL || k[0] == '\0')
    return pgd_error (err, EINVAL, "label with an empty key");
  if (strlen (k) + strlen (v ? v : "") > PGD_SNAP_LABEL_MAX)
    return pgd_error (err, EINVAL, "label %.64s...: key and value longer than %d bytes", k,
                      PGD_SNAP_LABEL_MAX);
  if (!utf8_valid (k) || !utf8_valid (v ? v : ""))
    return pgd_error (err, EINVAL, "label %.64s: not UTF-8", k);
  if (strcmp (k, PGD_SNAP_SIZE_LABEL) == 0)
    {
      uint64_t size;
      if (pgd_parse_size (v, &size, err) < 0)
        {
          err->errnum = EINVAL;
          return pgd_error_wrap (err, "label %s", k);
        }
    }
  return 0;
}

/* Check N labels and turn them into a JSON object in *OUT. */
static int
labels_json (Label **labels, size_t n, json_t **out, struct pgd_err *err)
{
  json_t *o = json_object ();

  if (o == NULL)
    return pgd_error (err, ENOMEM, "labels");
  for (size_t i = 0; i < n; i++)
    {
      int ret = check_label (labels[i]->key, labels[i]->value, err);
      if (ret == 0 && json_object_set_new (o, labels[i]->key, json_string (labels[i]->value)) < 0)
        ret = pgd_error (err, ENOMEM, "labels");
      if (ret < 0)
        {
          json_decref (o);
          return -1;
        }
    }
  *out = o;
  return 0;
}

/* The protobuf form of a record; points into REC (valid while the lock is held). */
struct info_buf
{
  Info info;
  Timestamp created;
  Timestamp updated;
  Label *entries;
  Label **ptrs;
};

static void
ts_of (Timestamp *t, int64_t ns)
{
  google__protobuf__timestamp__init (t);
  t->seconds = ns / 1000000000;
  t->nanos = (int32_t) (ns % 1000000000);
}

static int
info_fill (struct info_buf *b, const struct pgd_snap *rec, struct pgd_err *err)
{
  const char *k;
  json_t *v;
  size_t i = 0, n = json_object_size (rec->labels);

  containerd__services__snapshots__v1__info__init (&b->info);
  b->entries = calloc (n ? n : 1, sizeof *b->entries);
  b->ptrs = calloc (n ? n : 1, sizeof *b->ptrs);
  if (b->entries == NULL || b->ptrs == NULL)
    return pgd_error (err, ENOMEM, "snapshot %s", rec->key);
  json_object_foreach (rec->labels, k, v)
  {
    containerd__services__snapshots__v1__info__labels_entry__init (&b->entries[i]);
    b->entries[i].key = (char *) k;
    b->entries[i].value = (char *) json_string_value (v);
    b->ptrs[i] = &b->entries[i];
    i++;
  }
  b->info.name = rec->key;
  b->info.parent = rec->parent ? rec->parent : (char *) "";
  b->info.kind = (Containerd__Services__Snapshots__V1__Kind) rec->kind;
  ts_of (&b->created, rec->created_ns);
  ts_of (&b->updated, rec->updated_ns);
  b->info.created_at = &b->created;
  b->info.updated_at = &b->updated;
  b->info.n_labels = n;
  b->info.labels = b->ptrs;
  return 0;
}

static void
info_free (struct info_buf *b)
{
  free (b->entries);
  free (b->ptrs);
}

/* What containerd mounts: a bind of the layer's mount, read-only for a view. */
static int
reply_mounts (struct pgd_rpc_call *call, const ProtobufCMessageDescriptor *desc, const char *dir,
              bool ro, struct pgd_err *err)
{
  char *opts[] = { (char *) "rbind", (char *) (ro ? "ro" : "rw") };
  Mount mount;
  Mount *mounts[] = { &mount };
  /* Prepare/View/Mounts responses all are { repeated Mount mounts = 1; } */
  Containerd__Services__Snapshots__V1__MountsResponse resp;

  containerd__types__mount__init (&mount);
  mount.type = (char *) "bind";
  mount.source = (char *) dir;
  mount.n_options = 2;
  mount.options = opts;
  containerd__services__snapshots__v1__mounts_response__init (&resp);
  resp.base.descriptor = desc;
  resp.n_mounts = 1;
  resp.mounts = mounts;
  return reply (call, &resp.base, err);
}

/* Undo a layer made for a snapshot that does not come to be; failures only logged. */
static void
drop_layer (struct pgd_snapshotter *sn, const char *id)
{
  struct pgd_err err;
  if (pgd_layers_ops.remove (sn->layers, id, &err) < 0)
    pgd_log (PGD_LOG_WARN, "undo layer %s: %s", id, err.msg);
}

/* Prepare and View: a new layer (a clone of the parent's), mounted; its dir in DIR. */
static int
create_snapshot (struct pgd_snapshotter *sn, enum pgd_snap_kind kind, const char *key,
                 const char *parent, Label **labels, size_t nlabels, char *dir,
                 struct pgd_err *err)
{
  json_auto_t *lab = NULL;
  char id[PGD_SNAP_ID_LEN + 1], pid[PGD_SNAP_ID_LEN + 1];
  struct pgd_kv size_opt = { (char *) "size", NULL };
  struct pgd_snap *rec;

  if (parent && parent[0] == '\0')
    parent = NULL;
  if (check_key (key, "key", err) < 0 || (parent && check_key (parent, "parent", err) < 0)
      || labels_json (labels, nlabels, &lab, err) < 0)
    return -1;
  size_opt.value = (char *) json_string_value (json_object_get (lab, PGD_SNAP_SIZE_LABEL));
  {
    PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
    if (pgd_snaps_find (sn->snaps, key))
      return pgd_error (err, EEXIST, "snapshot %s already exists", key);
    if (parent)
      {
        struct pgd_snap *p = pgd_snaps_find (sn->snaps, parent);
        if (p == NULL || p->creating)
          return pgd_error (err, ENOENT, "parent snapshot %s not found", parent);
        if (p->kind != PGD_SNAP_COMMITTED)
          return pgd_error (err, EINVAL, "parent %s is not a committed snapshot (it is %s)",
                            parent, pgd_snap_kind_name (p->kind));
        memcpy (pid, p->id, sizeof pid);
      }
    rec = pgd_snaps_add (sn->snaps, key, kind, parent, err);
    if (rec == NULL)
      return -1;
    json_decref (rec->labels);
    rec->labels = lab;
    lab = NULL;
    memcpy (id, rec->id, sizeof id);
  }

  struct pgd_create_req req = {
    .id = id,
    .parent = parent ? pid : NULL,
    .storage_opt = &size_opt,
    .nstorage_opt = size_opt.value ? 1 : 0,
    .rw = kind == PGD_SNAP_ACTIVE,
  };
  int ret = pgd_layers_ops.create (sn->layers, &req, err);
  if (ret == 0 && (ret = pgd_layers_pin (sn->layers, id, dir, err)) < 0)
    drop_layer (sn, id);

  PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
  if (ret == 0)
    {
      rec->creating = false;
      ret = pgd_snaps_save (sn->snaps, err);
      if (ret < 0)
        drop_layer (sn, id);
    }
  if (ret < 0)
    {
      pgd_snaps_drop (sn->snaps, rec);
      return pgd_error_wrap (err, "%s %s", kind == PGD_SNAP_VIEW ? "view" : "prepare", key);
    }
  pgd_log (PGD_LOG_DEBUG, "%s %s (layer %s) on %s", pgd_snap_kind_name (kind), key, id,
           parent ? parent : "nothing");
  return 0;
}

static int
do_prepare (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
            struct pgd_err *err)
{
  char dir[PATH_MAX];
  Containerd__Services__Snapshots__V1__PrepareSnapshotRequest *req
      = UNPACK (Containerd__Services__Snapshots__V1__PrepareSnapshotRequest,
                containerd__services__snapshots__v1__prepare_snapshot_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  int ret = create_snapshot (ctx, PGD_SNAP_ACTIVE, req->key, req->parent, LABELS (req),
                             req->n_labels, dir, err);
  if (ret == 0)
    ret = reply_mounts (call, &containerd__services__snapshots__v1__prepare_snapshot_response__descriptor,
                        dir, false, err);
  containerd__services__snapshots__v1__prepare_snapshot_request__free_unpacked (req, NULL);
  return ret;
}

static int
do_view (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len, struct pgd_err *err)
{
  char dir[PATH_MAX];
  Containerd__Services__Snapshots__V1__ViewSnapshotRequest *req
      = UNPACK (Containerd__Services__Snapshots__V1__ViewSnapshotRequest,
                containerd__services__snapshots__v1__view_snapshot_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  int ret = create_snapshot (ctx, PGD_SNAP_VIEW, req->key, req->parent, LABELS (req),
                             req->n_labels, dir, err);
  if (ret == 0)
    ret = reply_mounts (call, &containerd__services__snapshots__v1__view_snapshot_response__descriptor,
                        dir, true, err);
  containerd__services__snapshots__v1__view_snapshot_request__free_unpacked (req, NULL);
  return ret;
}

/* The visible record of KEY, or NULL with ERR (NOT_FOUND). Locked. */
static struct pgd_snap *
lookup (struct pgd_snapshotter *sn, const char *key, struct pgd_err *err)
{
  if (check_key (key, "key", err) < 0)
    return NULL;
  struct pgd_snap *rec = pgd_snaps_find (sn->snaps, key);
  if (rec == NULL || rec->creating)
    {
      pgd_error (err, ENOENT, "snapshot %s not found", key);
      return NULL;
    }
  return rec;
}

static int
mounts_of (struct pgd_snapshotter *sn, const char *key, char *dir, bool *ro, struct pgd_err *err)
{
  char id[PGD_SNAP_ID_LEN + 1];
  {
    PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
    struct pgd_snap *rec = lookup (sn, key, err);
    if (rec == NULL)
      return -1;
    if (rec->kind == PGD_SNAP_COMMITTED)
      return pgd_error (err, EROFS, "snapshot %s is committed: only active and view "
                        "snapshots have mounts", key);
    *ro = rec->kind == PGD_SNAP_VIEW;
    memcpy (id, rec->id, sizeof id);
  }
  if (pgd_layers_pin (sn->layers, id, dir, err) < 0)
    return pgd_error_wrap (err, "mounts of %s", key);
  return 0;
}

static int
do_mounts (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
           struct pgd_err *err)
{
  char dir[PATH_MAX];
  bool ro = false;
  Containerd__Services__Snapshots__V1__MountsRequest *req
      = UNPACK (Containerd__Services__Snapshots__V1__MountsRequest,
                containerd__services__snapshots__v1__mounts_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  int ret = mounts_of (ctx, req->key, dir, &ro, err);
  if (ret == 0)
    ret = reply_mounts (call, &containerd__services__snapshots__v1__mounts_response__descriptor, dir,
                        ro, err);
  containerd__services__snapshots__v1__mounts_request__free_unpacked (req, NULL);
  return ret;
}

/* Inodes in use in the filesystem of the mounted layer ID (0 when it cannot be told). */
static int64_t
used_inodes (struct pgd_snapshotter *sn, const char *id)
{
  char dir[PATH_MAX];
  struct statvfs sv;
  struct pgd_err err;

  if (pgd_layers_pin (sn->layers, id, dir, &err) < 0 || statvfs (dir, &sv) < 0)
    return 0;
  return (int64_t) (sv.f_files - sv.f_ffree);
}

static int
commit (struct pgd_snapshotter *sn, const char *name, const char *key, Label **labels,
        size_t nlabels, struct pgd_err *err)
{
  json_auto_t *lab = NULL;
  char id[PGD_SNAP_ID_LEN + 1];
  struct pgd_snap *rec, *done;

  if (check_key (name, "name", err) < 0 || check_key (key, "key", err) < 0
      || labels_json (labels, nlabels, &lab, err) < 0)
    return -1;
  {
    PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
    rec = lookup (sn, key, err);
    if (rec == NULL)
      return -1;
    if (rec->kind != PGD_SNAP_ACTIVE)
      return pgd_error (err, EROFS, "snapshot %s is %s, not active: it cannot be committed",
                        key, pgd_snap_kind_name (rec->kind));
    if (rec->busy)
      return pgd_error (err, EBUSY, "snapshot %s is busy", key);
    if (pgd_snaps_find (sn->snaps, name))
      return pgd_error (err, EEXIST, "snapshot %s already exists", name);
    done = pgd_snaps_add (sn->snaps, name, PGD_SNAP_COMMITTED, rec->parent, err);
    if (done == NULL)
      return -1;
    rec->busy = true;
    memcpy (done->id, rec->id, sizeof id);
    memcpy (id, rec->id, sizeof id);
    json_decref (done->labels);
    done->labels = lab;
    lab = NULL;
  }

  /* committed layers are closed: a child clones the data, nothing writes it again */
  int64_t inodes = used_inodes (sn, id);
  int ret = pgd_layers_unpin (sn->layers, id, err);

  PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
  if (ret == 0)
    {
      done->inodes = inodes;
      done->creating = false;
      rec->creating = true; /* hidden from the save */
      ret = pgd_snaps_save (sn->snaps, err);
      rec->creating = false;
    }
  rec->busy = false;
  if (ret < 0)
    {
      done->creating = true;
      pgd_snaps_drop (sn->snaps, done);
      char dir[PATH_MAX];
      struct pgd_err again;
      if (pgd_layers_pin (sn->layers, id, dir, &again) < 0)
        pgd_log (PGD_LOG_WARN, "%s", again.msg);
      return pgd_error_wrap (err, "commit %s as %s", key, name);
    }
  pgd_snaps_drop (sn->snaps, rec);
  pgd_log (PGD_LOG_DEBUG, "committed %s as %s (layer %s)", key, name, id);
  return 0;
}

static int
reply_empty (struct pgd_rpc_call *call, struct pgd_err *err)
{
  Google__Protobuf__Empty e;
  google__protobuf__empty__init (&e);
  return reply (call, &e.base, err);
}

static int
do_commit (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
           struct pgd_err *err)
{
  Containerd__Services__Snapshots__V1__CommitSnapshotRequest *req
      = UNPACK (Containerd__Services__Snapshots__V1__CommitSnapshotRequest,
                containerd__services__snapshots__v1__commit_snapshot_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  int ret = commit (ctx, req->name, req->key, LABELS (req), req->n_labels, err);
  if (ret == 0)
    ret = reply_empty (call, err);
  containerd__services__snapshots__v1__commit_snapshot_request__free_unpacked (req, NULL);
  return ret;
}

static int
remove_snapshot (struct pgd_snapshotter *sn, const char *key, struct pgd_err *err)
{
  char id[PGD_SNAP_ID_LEN + 1];
  struct pgd_snap *rec;
  size_t nchildren;

  {
    PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
    rec = lookup (sn, key, err);
    if (rec == NULL)
      return -1;
    if (rec->busy)
      return pgd_error (err, EBUSY, "snapshot %s is busy", key);
    if ((nchildren = pgd_snaps_children (sn->snaps, key)) > 0)
      return pgd_error (err, ENOTEMPTY, "snapshot %s has %zu child snapshot(s): remove them first",
                        key, nchildren);
    rec->busy = true;
    memcpy (id, rec->id, sizeof id);
  }
  /* let go of the mount first: the store warns of removing a layer someone holds */
  int ret = pgd_layers_unpin (sn->layers, id, err);
  if (ret == 0)
    ret = pgd_layers_ops.remove (sn->layers, id, err);

  PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
  rec->busy = false;
  if (ret < 0)
    return pgd_error_wrap (err, "remove %s", key);
  rec->creating = true; /* hidden from the save */
  struct pgd_err serr;
  if (pgd_snaps_save (sn->snaps, &serr) < 0) /* the next save drops it from the file */
    pgd_log (PGD_LOG_WARN, "remove %s: %s", key, serr.msg);
  pgd_snaps_drop (sn->snaps, rec);
  pgd_log (PGD_LOG_DEBUG, "removed %s (layer %s)", key, id);
  return 0;
}

static int
do_remove (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
           struct pgd_err *err)
{
  Containerd__Services__Snapshots__V1__RemoveSnapshotRequest *req
      = UNPACK (Containerd__Services__Snapshots__V1__RemoveSnapshotRequest,
                containerd__services__snapshots__v1__remove_snapshot_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  int ret = remove_snapshot (ctx, req->key, err);
  if (ret == 0)
    ret = reply_empty (call, err);
  containerd__services__snapshots__v1__remove_snapshot_request__free_unpacked (req, NULL);
  return ret;
}

/* Reply with the Info of REC in a Stat or Update response (DESC). Locked. */
static int
reply_info (struct pgd_rpc_call *call, const ProtobufCMessageDescriptor *desc,
            const struct pgd_snap *rec, struct pgd_err *err)
{
  struct info_buf b = { 0 };
  /* Stat and Update responses both are { Info info = 1; } */
  Containerd__Services__Snapshots__V1__StatSnapshotResponse resp;
  int ret = info_fill (&b, rec, err);

  if (ret == 0)
    {
      containerd__services__snapshots__v1__stat_snapshot_response__init (&resp);
      resp.base.descriptor = desc;
      resp.info = &b.info;
      ret = reply (call, &resp.base, err);
    }
  info_free (&b);
  return ret;
}

static int
do_stat (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len, struct pgd_err *err)
{
  struct pgd_snapshotter *sn = ctx;
  Containerd__Services__Snapshots__V1__StatSnapshotRequest *req
      = UNPACK (Containerd__Services__Snapshots__V1__StatSnapshotRequest,
                containerd__services__snapshots__v1__stat_snapshot_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  int ret;
  {
    PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
    struct pgd_snap *rec = lookup (sn, req->key, err);
    ret = rec ? reply_info (call, &containerd__services__snapshots__v1__stat_snapshot_response__descriptor,
                            rec, err)
              : -1;
  }
  containerd__services__snapshots__v1__stat_snapshot_request__free_unpacked (req, NULL);
  return ret;
}

/* The labels REC gets from Update's INFO and field PATHS (none: all labels). */
static int
updated_labels (const struct pgd_snap *rec, const Info *info, char **paths, size_t npaths,
                json_t **out, struct pgd_err *err)
{
  json_auto_t *given = NULL;

  if (labels_json ((Label **) info->labels, info->n_labels, &given, err) < 0)
    return -1;
  if (npaths == 0)
    {
      *out = json_incref (given);
      return 0;
    }
  json_t *lab = json_deep_copy (rec->labels);
  if (lab == NULL)
    return pgd_error (err, ENOMEM, "update %s", rec->key);
  for (size_t i = 0; i < npaths; i++)
    {
      const char *p = paths[i];
      if (strcmp (p, "labels") == 0)
        {
          json_object_clear (lab);
          json_object_update (lab, given);
        }
      else if (strncmp (p, "labels.", 7) == 0 && p[7] != '\0')
        {
          json_t *v = json_object_get (given, p + 7);
          if (v && json_string_length (v) > 0)
            json_object_set (lab, p + 7, v);
          else
            json_object_del (lab, p + 7);
        }
      else
        {
          json_decref (lab);
          return pgd_error (err, EINVAL, "cannot update field %.200s of snapshot %s", p, rec->key);
        }
    }
  *out = lab;
  return 0;
}

static int
update (struct pgd_snapshotter *sn, struct pgd_rpc_call *call, const Info *info, char **paths,
        size_t npaths, struct pgd_err *err)
{
  json_t *lab = NULL;

  if (info == NULL)
    return pgd_error (err, EINVAL, "update without info");
  PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
  struct pgd_snap *rec = lookup (sn, info->name, err);
  if (rec == NULL || updated_labels (rec, info, paths, npaths, &lab, err) < 0)
    return -1;
  json_t *old = rec->labels;
  int64_t old_ns = rec->updated_ns;
  rec->labels = lab;
  rec->updated_ns = pgd_snap_now_ns ();
  if (pgd_snaps_save (sn->snaps, err) < 0)
    {
      rec->labels = old;
      rec->updated_ns = old_ns;
      json_decref (lab);
      return pgd_error_wrap (err, "update %s", info->name);
    }
  json_decref (old);
  return reply_info (call, &containerd__services__snapshots__v1__update_snapshot_response__descriptor,
                     rec, err);
}

static int
do_update (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
           struct pgd_err *err)
{
  Containerd__Services__Snapshots__V1__UpdateSnapshotRequest *req
      = UNPACK (Containerd__Services__Snapshots__V1__UpdateSnapshotRequest,
                containerd__services__snapshots__v1__update_snapshot_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  int ret = update (ctx, call, req->info, req->update_mask ? req->update_mask->paths : NULL,
                    req->update_mask ? req->update_mask->n_paths : 0, err);
  containerd__services__snapshots__v1__update_snapshot_request__free_unpacked (req, NULL);
  return ret;
}

/* Pack the visible records from *POS on, up to LIST_BATCH, into one List message. */
static int
pack_batch (struct pgd_snapshotter *sn, size_t *pos, uint8_t **out, size_t *len,
            struct pgd_err *err)
{
  struct info_buf bufs[LIST_BATCH];
  Info *infos[LIST_BATCH];
  size_t n = 0;
  int ret = 0;
  Containerd__Services__Snapshots__V1__ListSnapshotsResponse resp;

  memset (bufs, 0, sizeof bufs);
  for (; *pos < pgd_snaps_count (sn->snaps) && n < LIST_BATCH && ret == 0; (*pos)++)
    {
      struct pgd_snap *rec = pgd_snaps_at (sn->snaps, *pos);
      if (rec->creating)
        continue;
      ret = info_fill (&bufs[n], rec, err);
      infos[n] = &bufs[n].info;
      n++;
    }
  if (ret == 0)
    {
      containerd__services__snapshots__v1__list_snapshots_response__init (&resp);
      resp.n_info = n;
      resp.info = infos;
      *len = protobuf_c_message_get_packed_size (&resp.base);
      *out = malloc (*len ? *len : 1);
      if (*out == NULL)
        ret = pgd_error (err, ENOMEM, "list");
      else
        protobuf_c_message_pack (&resp.base, *out);
    }
  for (size_t i = 0; i < n; i++)
    info_free (&bufs[i]);
  return ret;
}

/* List: every snapshot, in messages of up to LIST_BATCH. Filters are not applied. */
static int
do_list (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len, struct pgd_err *err)
{
  struct pgd_snapshotter *sn = ctx;
  size_t pos = 0;
  bool more = true;
  Containerd__Services__Snapshots__V1__ListSnapshotsRequest *req
      = UNPACK (Containerd__Services__Snapshots__V1__ListSnapshotsRequest,
                containerd__services__snapshots__v1__list_snapshots_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  if (req->n_filters > 0)
    pgd_log (PGD_LOG_DEBUG, "list: %zu filter(s) not applied", req->n_filters);
  containerd__services__snapshots__v1__list_snapshots_request__free_unpacked (req, NULL);
  while (more)
    {
      cleanup_free uint8_t *msg = NULL;
      size_t mlen = 0;
      {
        /* packed under the lock, sent outside it: a slow client holds nobody up */
        PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
        if (pack_batch (sn, &pos, &msg, &mlen, err) < 0)
          return -1;
        more = pos < pgd_snaps_count (sn->snaps);
      }
      if (mlen > 0 && pgd_rpc_send (call, msg, mlen, err) < 0)
        return -1;
    }
  return 0;
}

static int
usage (struct pgd_snapshotter *sn, const char *key, int64_t *bytes, int64_t *inodes,
       struct pgd_err *err)
{
  char id[PGD_SNAP_ID_LEN + 1];
  int64_t base = 0, own = 0;
  bool committed;
  uint64_t size;

  {
    PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
    struct pgd_snap *rec = lookup (sn, key, err);
    if (rec == NULL)
      return -1;
    struct pgd_snap *p = rec->parent ? pgd_snaps_find (sn->snaps, rec->parent) : NULL;
    base = p ? p->inodes : 0;
    committed = rec->kind == PGD_SNAP_COMMITTED;
    own = rec->inodes;
    memcpy (id, rec->id, sizeof id);
  }
  if (pgd_layers_usage (sn->layers, id, &size, err) < 0)
    return pgd_error_wrap (err, "usage of %s", key);
  if (!committed)
    own = used_inodes (sn, id);
  *bytes = (int64_t) size;
  *inodes = own > base ? own - base : 0;
  return 0;
}

static int
do_usage (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
          struct pgd_err *err)
{
  Containerd__Services__Snapshots__V1__UsageResponse resp;
  Containerd__Services__Snapshots__V1__UsageRequest *req
      = UNPACK (Containerd__Services__Snapshots__V1__UsageRequest,
                containerd__services__snapshots__v1__usage_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  containerd__services__snapshots__v1__usage_response__init (&resp);
  int ret = usage (ctx, req->key, &resp.size, &resp.inodes, err);
  if (ret == 0)
    ret = reply (call, &resp.base, err);
  containerd__services__snapshots__v1__usage_request__free_unpacked (req, NULL);
  return ret;
}

/* Cleanup: remove layers that no snapshot names (left by a crash between the store
   and the registry). Records are reserved before their layer exists and dropped after
   it is gone, so a layer in the making is never taken. */
static int
do_cleanup (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
            struct pgd_err *err)
{
  struct pgd_snapshotter *sn = ctx;
  struct pgd_kvlist ids = { 0 };
  Containerd__Services__Snapshots__V1__CleanupRequest *req
      = UNPACK (Containerd__Services__Snapshots__V1__CleanupRequest,
                containerd__services__snapshots__v1__cleanup_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  containerd__services__snapshots__v1__cleanup_request__free_unpacked (req, NULL);
  if (pgd_layers_list (sn->layers, &ids, err) < 0)
    return pgd_error_wrap (err, "cleanup");
  for (size_t i = 0; i < ids.n; i++)
    {
      bool named = false;
      {
        PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
        for (size_t j = 0; j < pgd_snaps_count (sn->snaps) && !named; j++)
          named = strcmp (pgd_snaps_at (sn->snaps, j)->id, ids.items[i].key) == 0;
      }
      if (!named)
        {
          pgd_log (PGD_LOG_INFO, "cleanup: removing layer %s, which no snapshot names",
                   ids.items[i].key);
          drop_layer (sn, ids.items[i].key);
        }
    }
  pgd_kvlist_free (&ids);
  return reply_empty (call, err);
}

void
pgd_snapshots_restore (struct pgd_snapshotter *sn)
{
  PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
  for (size_t i = 0; i < pgd_snaps_count (sn->snaps); i++)
    {
      struct pgd_snap *rec = pgd_snaps_at (sn->snaps, i);
      char dir[PATH_MAX];
      struct pgd_err err;
      if (rec->kind != PGD_SNAP_COMMITTED && pgd_layers_pin (sn->layers, rec->id, dir, &err) < 0)
        pgd_log (PGD_LOG_WARN, "snapshot %s: %s (Mounts tries again)", rec->key, err.msg);
    }
}

#define METHOD(name, fn) { "/containerd.services.snapshots.v1.Snapshots/" name, fn }
const struct pgd_rpc_method pgd_snapshots_methods[] = {
  METHOD ("Prepare", do_prepare), METHOD ("View", do_view),     METHOD ("Mounts", do_mounts),
  METHOD ("Commit", do_commit),   METHOD ("Remove", do_remove), METHOD ("Stat", do_stat),
  METHOD ("Update", do_update),   METHOD ("List", do_list),     METHOD ("Usage", do_usage),
  METHOD ("Cleanup", do_cleanup),
};
const size_t pgd_snapshots_nmethods = sizeof pgd_snapshots_methods / sizeof *pgd_snapshots_methods;
