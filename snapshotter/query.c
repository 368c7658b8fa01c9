/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The Snapshots methods that read (Stat, List, Usage) or only relabel (Update). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "svc.h"
#include "util.h"

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
  t->nanos = (int32_t)(ns % 1000000000);
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
    b->entries[i].key = (char *)k;
    b->entries[i].value = (char *)json_string_value (v);
    b->ptrs[i] = &b->entries[i];
    i++;
  }
  b->info.name = rec->key;
  b->info.parent = rec->parent ? rec->parent : (char *)"";
  b->info.kind = (Containerd__Services__Snapshots__V1__Kind)rec->kind;
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

/* Reply (DESC: a Stat or Update response, both { Info info = 1; }) with the Info of
   REC. Registry locked. */
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
      ret = pgd_svc_reply (call, &resp.base, err);
    }
  info_free (&b);
  return ret;
}

int
pgd_svc_stat (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
              struct pgd_err *err)
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
    struct pgd_snap *rec = pgd_svc_lookup (sn, req->key, err);
    ret = rec ? reply_info (
              call, &containerd__services__snapshots__v1__stat_snapshot_response__descriptor, rec,
              err)
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

  if (pgd_svc_labels_json ((Label **)info->labels, info->n_labels, &given, err) < 0)
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
  struct pgd_snap *rec = pgd_svc_lookup (sn, info->name, err);
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
  return reply_info (
      call, &containerd__services__snapshots__v1__update_snapshot_response__descriptor, rec, err);
}

int
pgd_svc_update (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
                struct pgd_err *err)
{
  Containerd__Services__Snapshots__V1__UpdateSnapshotRequest *req = UNPACK (
      Containerd__Services__Snapshots__V1__UpdateSnapshotRequest,
      containerd__services__snapshots__v1__update_snapshot_request__unpack, buf, len, err);
  if (req == NULL)
    return -1;
  int ret = update (ctx, call, req->info, req->update_mask ? req->update_mask->paths : NULL,
                    req->update_mask ? req->update_mask->n_paths : 0, err);
  containerd__services__snapshots__v1__update_snapshot_request__free_unpacked (req, NULL);
  return ret;
}

#define LIST_BATCH 100 /* snapshots per List message */

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
int
pgd_svc_list (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
              struct pgd_err *err)
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
    struct pgd_snap *rec = pgd_svc_lookup (sn, key, err);
    if (rec == NULL)
      return -1;
    if (rec->busy) /* counting inodes would mount a layer a Commit is closing */
      return pgd_error (err, EBUSY, "snapshot %s is being committed or removed", key);
    struct pgd_snap *p = rec->parent ? pgd_snaps_find (sn->snaps, rec->parent) : NULL;
    base = p ? p->inodes : 0;
    committed = rec->kind == PGD_SNAP_COMMITTED;
    own = rec->inodes;
    memcpy (id, rec->id, sizeof id);
  }
  if (pgd_layers_usage (sn->layers, id, &size, err) < 0)
    return pgd_error_wrap (err, "usage of %s", key);
  if (!committed)
    own = pgd_svc_used_inodes (sn, id);
  *bytes = (int64_t)size;
  *inodes = own > base ? own - base : 0;
  return 0;
}

int
pgd_svc_usage (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
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
    ret = pgd_svc_reply (call, &resp.base, err);
  containerd__services__snapshots__v1__usage_request__free_unpacked (req, NULL);
  return ret;
}
