/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Internal to the Snapshots service (service.c: the methods that change snapshots;
   query.c: Stat, Update, List, Usage): message types, request helpers, lookups. */
#ifndef PGD_SVC_H
#define PGD_SVC_H

#include <jansson.h>

#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.pb-c.h"
#include "service.h"

typedef Containerd__Services__Snapshots__V1__Info Info;
typedef Containerd__Services__Snapshots__V1__Info__LabelsEntry Label;
typedef Containerd__Types__Mount Mount;
typedef Google__Protobuf__Timestamp Timestamp;

/* Every request's labels entry has the layout of Info's: one type serves them all. */
_Static_assert(
    sizeof (Containerd__Services__Snapshots__V1__PrepareSnapshotRequest__LabelsEntry)
            == sizeof (Label)
        && sizeof (Containerd__Services__Snapshots__V1__ViewSnapshotRequest__LabelsEntry)
               == sizeof (Label)
        && sizeof (Containerd__Services__Snapshots__V1__CommitSnapshotRequest__LabelsEntry)
               == sizeof (Label),
    "labels entries differ");
#define LABELS(req) ((Label **)(req)->labels)

/* Unpack a request; a message that does not parse is INVALID_ARGUMENT. */
#define UNPACK(type, fn, buf, len, err)                                                            \
  ({                                                                                               \
    type *m_ = fn (NULL, len, buf);                                                                \
    if (m_ == NULL)                                                                                \
      pgd_error (err, EINVAL, "malformed %s", #type);                                              \
    m_;                                                                                            \
  })

/* Pack M and send it as the (next) reply on CALL. */
int pgd_svc_reply (struct pgd_rpc_call *call, const ProtobufCMessage *m, struct pgd_err *err);

/* A key or name (WHAT in messages): 1..PGD_SNAP_KEY_MAX bytes of UTF-8; else EINVAL. */
int pgd_svc_check_key (const char *key, const char *what, struct pgd_err *err);

/* Check N labels (containerd's limits, the size label) into a JSON object in *OUT. */
int pgd_svc_labels_json (Label **labels, size_t n, json_t **out, struct pgd_err *err);

/* The visible record of KEY, or NULL with ERR (NOT_FOUND). Registry locked. */
struct pgd_snap *pgd_svc_lookup (struct pgd_snapshotter *sn, const char *key, struct pgd_err *err);

/* Inodes in use in the filesystem of the mounted layer ID (0 when it cannot be told). */
int64_t pgd_svc_used_inodes (struct pgd_snapshotter *sn, const char *id);

/* The read-mostly methods (query.c), as pgd_rpc_handler. */
int pgd_svc_stat (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
                  struct pgd_err *err);
int pgd_svc_update (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
                    struct pgd_err *err);
int pgd_svc_list (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
                  struct pgd_err *err);
int pgd_svc_usage (void *ctx, struct pgd_rpc_call *call, const uint8_t *buf, size_t len,
                   struct pgd_err *err);

#endif
