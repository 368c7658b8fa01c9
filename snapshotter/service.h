/* SPDX-License-Identifier: GPL-2.0-or-later */
/* containerd's Snapshots service (containerd.services.snapshots.v1) on the layer store:
   every snapshot is a layer; a child is a clone of its committed parent; active and
   view snapshots stay mounted while they exist and are handed out as bind mounts. */
#ifndef PGD_SERVICE_H
#define PGD_SERVICE_H

#include <pthread.h>
#include <stddef.h>

#include "meta.h"
#include "rpc.h"
#include "store/layers.h"

/* The label that gives one snapshot its own filesystem size (e.g. "20G"). */
#define PGD_SNAP_SIZE_LABEL "containerd.io/snapshot/ploop.size"

/* Longest key or name accepted, in bytes (containerd's own keys are far shorter). */
#define PGD_SNAP_KEY_MAX 4096

/* Longest label, key plus value, in bytes: containerd's labels.Validate limit. */
#define PGD_SNAP_LABEL_MAX 4096

/* What the methods work on; the handlers' CTX. */
struct pgd_snapshotter
{
  struct pgd_layers *layers;
  struct pgd_snaps *snaps;
  pthread_mutex_t bg_lock; /* guards bg_running */
  pthread_cond_t bg_cond;  /* broadcast when a background removal ends */
  unsigned bg_running;     /* removals still unmounting and deleting their layer */
};

/* The method table of the service, for pgd_rpc_start. */
extern const struct pgd_rpc_method pgd_snapshots_methods[];
extern const size_t pgd_snapshots_nmethods;

/* At start: mount every active and view snapshot again (a mount that outlived the
   previous process is adopted as it is, so running containers keep their roots). */
void pgd_snapshots_restore (struct pgd_snapshotter *sn);

/* Delete every layer that no snapshot names (a crash between the store and the
   registry, or during a background removal): Cleanup, and at start. Records are
   reserved before their layer exists and dropped when its removal starts. */
void pgd_snapshots_sweep (struct pgd_snapshotter *sn);

/* Wait until the layers of removed snapshots are unmounted and deleted (shutdown). */
void pgd_snapshots_drain (struct pgd_snapshotter *sn);

#endif
