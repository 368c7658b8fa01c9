/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The layer store: every Docker layer is a ploop image under Home; implements the
   graphdriver operation table (driver.h) on top of image, engine and diff. */
#ifndef PGD_LAYERS_H
#define PGD_LAYERS_H

#include "driver.h"
#include "err.h"

struct pgd_layers;

/* How the binary configures the layer store. */
struct pgd_layers_config
{
  const char *state_file; /* where Init is persisted; read back at start */
  const char *home;       /* serve this Home at once (NULL = wait for Init/state) */
  const char *engine;     /* "auto", "user" or "kernel" (NULL = auto) */
  const char *exe;        /* binary with the serve-image sub-mode (NULL = /proc/self/exe) */
  unsigned linger_ms;     /* keep a layer mounted this long after its last Put, so that a
                             Get soon after reuses the mount (0: unmount at once) */
  bool no_tracker;        /* no change tracker (a face that never asks for Changes/Diff:
                             spares its fanotify groups, 128 per user by default) */
  unsigned stall_ms;      /* bound on a wait for an image server that makes no progress
                             (the binary's default: PGD_SERVER_STALL_MS; 0: none) */
};

/* Open the store: load the persisted Init state, sweep staging, adopt live mounts. */
int pgd_layers_open (struct pgd_layers **out, const struct pgd_layers_config *cfg,
                     struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Stop the idle-mount reaper and release memory; held mounts stay (containers keep
   running across a plugin restart). Call pgd_layers_shutdown first to close idle ones. */
void pgd_layers_close (struct pgd_layers *l);

/* Unmount every layer nobody holds, idle ones included (shutdown, Cleanup). */
void pgd_layers_shutdown (struct pgd_layers *l);

/* Would Changes of ID against PARENT be answered now on the change tracker's hint
   (store/track.c)? *USE says; *NVISIT (if given) counts the directories it would
   visit. Mounts both layers for the question, as Changes does. */
int pgd_layers_track_hint (struct pgd_layers *l, const char *id, const char *parent, bool *use,
                           size_t *nvisit, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Keep layer ID mounted until pgd_layers_unpin or its removal, whoever else takes and
   drops references meanwhile; its directory goes to DIR (PATH_MAX). Idempotent: a
   mounted layer (also one adopted at start) is only marked held. Not concurrent for
   one ID. For a face whose objects are served for their whole life (the snapshotter). */
int pgd_layers_pin (struct pgd_layers *l, const char *id, char *dir, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Unmount layer ID now, dropping every reference (the data is closed and clean on
   return); not mounted or unknown: success. On failure it stays mounted and held. */
int pgd_layers_unpin (struct pgd_layers *l, const char *id, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Disk bytes of what layer ID itself adds: its private top delta (not its parents');
   a mounted layer's filesystem is synced first so that what was written counts. */
int pgd_layers_usage (struct pgd_layers *l, const char *id, uint64_t *bytes, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Append the ID of every complete-or-not layer on disk to OUT (values empty). */
int pgd_layers_list (struct pgd_layers *l, struct pgd_kvlist *out, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* The operation table; pass the struct pgd_layers * as its ctx. */
extern const struct pgd_ops pgd_layers_ops;

#endif
