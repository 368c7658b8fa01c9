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

#include "log.h"
#include "svc.h"
#include "util.h"

/* Pack M and send it as the (next) reply. */
int
pgd_svc_reply (struct pgd_rpc_call *call, const ProtobufCMessage *m, struct pgd_err *err)
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
int
pgd_svc_check_key (const char *key, const char *what, struct pgd_err *err)
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
int
pgd_svc_labels_json (Label **labels, size_t n, json_t **out, struct pgd_err *err)
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

/* Reply (DESC: a Prepare, View or Mounts response) with what containerd mounts: a
   bind of the layer's mount, read-only for a view. */
static int
reply_mounts (struct pgd_rpc_call *call, const ProtobufCMessageDescriptor *desc, const char *dir,
              bool ro, struct pgd_err *err)
{
  char *opts[] = { (char *)"rbind", (char *)(ro ? "ro" : "rw") };
  Mount mount;
  Mount *mounts[] = { &mount };
  /* Prepare/View/Mounts responses all are { repeated Mount mounts = 1; } */
  Containerd__Services__Snapshots__V1__MountsResponse resp;

  containerd__types__mount__init (&mount);
  mount.type = (char *)"bind";
  mount.source = (char *)dir;
  mount.n_options = 2;
  mount.options = opts;
  containerd__services__snapshots__v1__mounts_response__init (&resp);
  resp.base.descriptor = desc;
  resp.n_mounts = 1;
  resp.mounts = mounts;
  return pgd_svc_reply (call, &resp.base, err);
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
                 const char *parent, Label **labels, size_t nlabels, char *dir, struct pgd_err *err)
{
  json_auto_t *lab = NULL;
  char id[PGD_SNAP_ID_LEN + 1], pid[PGD_SNAP_ID_LEN + 1];
  struct pgd_kv size_opt = { (char *)"size", NULL };
  struct pgd_snap *rec;

  if (parent && parent[0] == '\0')
    parent = NULL;
  if (pgd_svc_check_key (key, "key", err) < 0
      || (parent && pgd_svc_check_key (parent, "parent", err) < 0)
      || pgd_svc_labels_json (labels, nlabels, &lab, err) < 0)
    return -1;
  size_opt.value = (char *)json_string_value (json_object_get (lab, PGD_SNAP_SIZE_LABEL));
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
          return pgd_error (err, EINVAL, "parent %s is not a committed snapshot (it is %s)", parent,
                            pgd_snap_kind_name (p->kind));
        if (p->busy)
          return pgd_error (err, EBUSY, "parent %s is being removed", parent);
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
  Containerd__Services__Snapshots__V1__PrepareSnapshotRequest *req = UNPACK (
      Containerd__Services__Snapshots__V1__PrepareSnapshotRequest,
      containerd__services__snapshots__v1__prepare_snapshot_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  int ret = create_snapshot (ctx, PGD_SNAP_ACTIVE, req->key, req->parent, LABELS (req),
                             req->n_labels, dir, err);
  if (ret == 0)
    ret = reply_mounts (call,
                        &containerd__services__snapshots__v1__prepare_snapshot_response__descriptor,
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
  int ret = create_snapshot (ctx, PGD_SNAP_VIEW, req->key, req->parent, LABELS (req), req->n_labels,
                             dir, err);
  if (ret == 0)
    ret = reply_mounts (call,
                        &containerd__services__snapshots__v1__view_snapshot_response__descriptor,
                        dir, true, err);
  containerd__services__snapshots__v1__view_snapshot_request__free_unpacked (req, NULL);
  return ret;
}

/* The visible record of KEY, or NULL with ERR (NOT_FOUND). Locked. */
struct pgd_snap *
pgd_svc_lookup (struct pgd_snapshotter *sn, const char *key, struct pgd_err *err)
{
  if (pgd_svc_check_key (key, "key", err) < 0)
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
    struct pgd_snap *rec = pgd_svc_lookup (sn, key, err);
    if (rec == NULL)
      return -1;
    if (rec->kind == PGD_SNAP_COMMITTED)
      return pgd_error (err, EROFS,
                        "snapshot %s is committed: only active and view "
                        "snapshots have mounts",
                        key);
    /* a Commit in flight closes the layer: mounting it again would undo that */
    if (rec->busy)
      return pgd_error (err, EBUSY, "snapshot %s is being committed or removed", key);
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
    ret = reply_mounts (call, &containerd__services__snapshots__v1__mounts_response__descriptor,
                        dir, ro, err);
  containerd__services__snapshots__v1__mounts_request__free_unpacked (req, NULL);
  return ret;
}

/* Inodes in use in the filesystem of the mounted layer ID (0 when it cannot be told). */
int64_t
pgd_svc_used_inodes (struct pgd_snapshotter *sn, const char *id)
{
  char dir[PATH_MAX];
  struct statvfs sv;
  struct pgd_err err;

  if (pgd_layers_pin (sn->layers, id, dir, &err) < 0 || statvfs (dir, &sv) < 0)
    return 0;
  return (int64_t)(sv.f_files - sv.f_ffree);
}

static int
commit (struct pgd_snapshotter *sn, const char *name, const char *key, Label **labels,
        size_t nlabels, struct pgd_err *err)
{
  json_auto_t *lab = NULL;
  char id[PGD_SNAP_ID_LEN + 1];
  struct pgd_snap *rec, *done;

  if (pgd_svc_check_key (name, "name", err) < 0 || pgd_svc_check_key (key, "key", err) < 0
      || pgd_svc_labels_json (labels, nlabels, &lab, err) < 0)
    return -1;
  {
    PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
    rec = pgd_svc_lookup (sn, key, err);
    if (rec == NULL)
      return -1;
    if (rec->kind != PGD_SNAP_ACTIVE)
      return pgd_error (err, EROFS, "snapshot %s is %s, not active: it cannot be committed", key,
                        pgd_snap_kind_name (rec->kind));
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
  int64_t inodes = pgd_svc_used_inodes (sn, id);
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
  return pgd_svc_reply (call, &e.base, err);
}

static int
do_commit (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
           struct pgd_err *err)
{
  Containerd__Services__Snapshots__V1__CommitSnapshotRequest *req = UNPACK (
      Containerd__Services__Snapshots__V1__CommitSnapshotRequest,
      containerd__services__snapshots__v1__commit_snapshot_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  int ret = commit (ctx, req->name, req->key, LABELS (req), req->n_labels, err);
  if (ret == 0)
    ret = reply_empty (call, err);
  containerd__services__snapshots__v1__commit_snapshot_request__free_unpacked (req, NULL);
  return ret;
}

/* The unmount and deletion of a removed snapshot's layer, after Remove answered. */
struct removal
{
  struct pgd_snapshotter *sn;
  char id[PGD_SNAP_ID_LEN + 1];
  char *key;
};

static void *
removal_thread (void *arg)
{
  struct removal *rm = arg;
  struct pgd_snapshotter *sn = rm->sn;
  struct pgd_err err;

  /* let go of the mount first: the store warns of removing a layer someone holds */
  if (pgd_layers_unpin (sn->layers, rm->id, &err) < 0
      || pgd_layers_ops.remove (sn->layers, rm->id, &err) < 0)
    pgd_log (PGD_LOG_WARN, "remove %s: %s (its layer is swept by Cleanup or the next start)",
             rm->key, err.msg);
  else
    pgd_log (PGD_LOG_DEBUG, "removed %s (layer %s)", rm->key, rm->id);
  free (rm->key);
  free (rm);
  PGD_SCOPED_LOCK (&sn->bg_lock);
  sn->bg_running--;
  pthread_cond_broadcast (&sn->bg_cond);
  return NULL;
}

/* Remove answers once the snapshot is gone from the registry (saved); its layer is
   unmounted and deleted by a thread of its own, off containerd's critical path
   (`ctr run --rm`, garbage collection). A crash before that leaves a layer that no
   snapshot names: Cleanup and the next start delete it. */
static int
remove_snapshot (struct pgd_snapshotter *sn, const char *key, struct pgd_err *err)
{
  struct removal *rm = calloc (1, sizeof *rm);
  size_t nchildren;

  if (rm == NULL || (rm->key = strdup (key ? key : "")) == NULL)
    {
      free (rm);
      return pgd_error (err, ENOMEM, "remove %s", key);
    }
  rm->sn = sn;
  {
    PGD_SCOPED_LOCK (pgd_snaps_mutex (sn->snaps));
    struct pgd_snap *rec = pgd_svc_lookup (sn, key, err);
    int ret = 0;
    if (rec == NULL)
      ret = -1;
    else if (rec->busy)
      ret = pgd_error (err, EBUSY, "snapshot %s is busy", key);
    else if ((nchildren = pgd_snaps_children (sn->snaps, key)) > 0)
      ret = pgd_error (err, ENOTEMPTY, "snapshot %s has %zu child snapshot(s): remove them first",
                       key, nchildren);
    if (ret == 0)
      {
        rec->creating = true; /* hidden from the save */
        ret = pgd_snaps_save (sn->snaps, err);
        rec->creating = false;
      }
    if (ret < 0)
      {
        free (rm->key);
        free (rm);
        return ret;
      }
    memcpy (rm->id, rec->id, sizeof rm->id);
    pgd_snaps_drop (sn->snaps, rec);
  }
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init (&attr);
  pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
  pthread_mutex_lock (&sn->bg_lock);
  sn->bg_running++;
  pthread_mutex_unlock (&sn->bg_lock);
  if (pthread_create (&t, &attr, removal_thread, rm) != 0)
    removal_thread (rm); /* no thread to be had: remove it now */
  pthread_attr_destroy (&attr);
  return 0;
}

void
pgd_snapshots_drain (struct pgd_snapshotter *sn)
{
  PGD_SCOPED_LOCK (&sn->bg_lock);
  while (sn->bg_running > 0)
    pthread_cond_wait (&sn->bg_cond, &sn->bg_lock);
}

static int
do_remove (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
           struct pgd_err *err)
{
  Containerd__Services__Snapshots__V1__RemoveSnapshotRequest *req = UNPACK (
      Containerd__Services__Snapshots__V1__RemoveSnapshotRequest,
      containerd__services__snapshots__v1__remove_snapshot_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  int ret = remove_snapshot (ctx, req->key, err);
  if (ret == 0)
    ret = reply_empty (call, err);
  containerd__services__snapshots__v1__remove_snapshot_request__free_unpacked (req, NULL);
  return ret;
}

void
pgd_snapshots_sweep (struct pgd_snapshotter *sn)
{
  struct pgd_kvlist ids = { 0 };
  struct pgd_err err;

  /* layers of removed snapshots still being deleted are no orphans: let them finish
     (containerd's garbage collector calls Cleanup right after its Removes) */
  pgd_snapshots_drain (sn);
  if (pgd_layers_list (sn->layers, &ids, &err) < 0)
    {
      pgd_log (PGD_LOG_WARN, "sweep: %s", err.msg);
      return;
    }
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
          pgd_log (PGD_LOG_INFO, "removing layer %s, which no snapshot names", ids.items[i].key);
          drop_layer (sn, ids.items[i].key);
        }
    }
  pgd_kvlist_free (&ids);
}

/* Cleanup: the sweep of layers that no snapshot names. */
static int
do_cleanup (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
            struct pgd_err *err)
{
  struct pgd_snapshotter *sn = ctx;
  Containerd__Services__Snapshots__V1__CleanupRequest *req
      = UNPACK (Containerd__Services__Snapshots__V1__CleanupRequest,
                containerd__services__snapshots__v1__cleanup_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  containerd__services__snapshots__v1__cleanup_request__free_unpacked (req, NULL);
  pgd_snapshots_sweep (sn);
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

#define METHOD(name, fn)                                                                           \
  {                                                                                                \
    "/containerd.services.snapshots.v1.Snapshots/" name, fn                                        \
  }
const struct pgd_rpc_method pgd_snapshots_methods[] = {
  METHOD ("Prepare", do_prepare),    METHOD ("View", do_view),      METHOD ("Mounts", do_mounts),
  METHOD ("Commit", do_commit),      METHOD ("Remove", do_remove),  METHOD ("Stat", pgd_svc_stat),
  METHOD ("Update", pgd_svc_update), METHOD ("List", pgd_svc_list), METHOD ("Usage", pgd_svc_usage),
  METHOD ("Cleanup", do_cleanup),
};
const size_t pgd_snapshots_nmethods = sizeof pgd_snapshots_methods / sizeof *pgd_snapshots_methods;
