/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Private to the layer store (driver/store/): its struct and the helpers its files
   share. The rest of the program sees store/layers.h only (white-box tests aside). */
#ifndef PGD_STORE_INTERNAL_H
#define PGD_STORE_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "driver.h"
#include "engine/engine.h"
#include "err.h"
#include "layers.h"

#define PGD_DEFAULT_SIZE (10ULL << 30)
#define PGD_DEFAULT_CLUSTER (64U << 10) /* chosen by bench/footprint.sh and make bench */
#define PGD_BUCKETS 256

enum layer_state
{
  LAYER_UNMOUNTED = 0,
  LAYER_MOUNTED = 1,
};

/* In-memory state of one layer; created on first use, freed on Remove. */
struct layer
{
  struct layer *next;
  char *id;
  unsigned refs; /* Get references plus internal ones (diff, apply) */
  enum layer_state state;
  bool ro;             /* mounted read-only */
  bool busy;           /* a mount, unmount, clone or remove is in progress */
  unsigned pins;       /* threads holding or waiting for the claim: the entry is freed
                          only when it has left the table and nobody pins it */
  bool gone;           /* dropped from the table while pinned (its ID was removed) */
  uint64_t idle_since; /* pgd_now_ns of the last Put to 0 refs while still mounted; 0 = not idle */
  bool server_lost;    /* its image server made no progress and was declared dead (killed):
                          writes it had not flushed may be lost; the next Get says so */
};

struct pgd_layers
{
  pthread_mutex_t lock; /* guards everything below but the template lock */
  pthread_cond_t cond;  /* broadcast whenever a layer stops being busy or goes idle
                           (CLOCK_MONOTONIC, for the reaper's timed waits) */
  pthread_mutex_t template_lock;
  bool ready; /* Home is known (Init or persisted state) */
  char home[PATH_MAX];
  char state_file[PATH_MAX];
  char engine_name[16];
  char exe[PATH_MAX];
  struct pgd_engine engine;
  uint64_t default_size;
  uint32_t cluster;
  struct pgd_idmaps maps;
  struct layer *table[PGD_BUCKETS];
  unsigned linger_ms; /* keep a layer mounted this long after its last Put (0: unmount at once) */
  struct pgd_tracker *tracker; /* records what changed in read-write mounts (track.c) */
  pthread_t reaper;            /* unmounts idle layers once they have lingered (idle.c) */
  bool reaper_running;
  bool reaper_stop;
  unsigned reap_jobs; /* idle unmounts under way, one thread each (idle.c) */
  unsigned stall_ms;  /* the engine's stall bound, kept across engine changes */
  int home_lock_fd;   /* flock'ed <Home>/.lock (homelock.c); -1 when none */
  char locked_home[PATH_MAX];
};

/* Take the exclusive lock of HOME (kept while the store serves it; a lock of another
   Home is let go). EBUSY, naming the holder's pid, when another process has it. */
int pgd_home_lock (struct pgd_layers *l, const char *home, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Let go of the Home lock, if held. */
void pgd_home_unlock (struct pgd_layers *l);

/* Path helpers: write "<home>/<sub>/<id>" into BUF (PATH_MAX). */
void pgd_store_path (const struct pgd_layers *l, char *buf, const char *sub, const char *id);

/* Fail with a clear error unless Init (or persisted state) gave a Home. Locked. */
int pgd_store_ready (const struct pgd_layers *l, struct pgd_err *err);

/* Find (and with CREATE, add) the entry of ID. Called with l->lock held. */
struct layer *pgd_layer_find (struct pgd_layers *l, const char *id, bool create);

/* Drop the entry of ID from the table; freed now, or by the last thread that pins it
   (whose claim then fails). Called with l->lock held. */
void pgd_layer_forget (struct pgd_layers *l, const char *id);

/* True when layers/<id> holds an image. */
bool pgd_layer_on_disk (const struct pgd_layers *l, const char *id);

/* Check the layer's ApplyDiff marker: fail if an ApplyDiff started and never finished. */
int pgd_layer_usable (const struct pgd_layers *l, const char *id, struct pgd_err *err);

enum
{
  PGD_ACQ_RW = 1 << 0,       /* fail instead of mounting read-only */
  PGD_ACQ_APPLYING = 1 << 1, /* the caller is the ApplyDiff that makes the layer whole */
};

/* Take a mount reference on ID (mounting on 0 -> 1) and return its directory in DIR
   (PATH_MAX). FLAGS are PGD_ACQ_*. */
int pgd_layer_acquire (struct pgd_layers *l, const char *id, const char *mount_label,
                       unsigned flags, char *dir, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

enum
{
  PGD_REL_NOW = 1 << 0, /* unmount at zero refs now, never linger (the data must be closed) */
};

/* Drop a reference taken by pgd_layer_acquire. At zero the layer stays mounted for
   l->linger_ms (a Get meanwhile takes the mount back) unless FLAGS has PGD_REL_NOW or
   linger is 0; then it is unmounted now. Unknown ID: success. */
int pgd_layer_release (struct pgd_layers *l, const char *id, unsigned flags, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Unmount LAY, which the caller has claimed and nobody holds. Called with l->lock held;
   drops it while unmounting. On success, or when the mount is gone anyway, the layer is
   unmounted with no refs; otherwise it stays mounted and ERR says why. Not idle after. */
int pgd_layer_unmount (struct pgd_layers *l, struct layer *lay, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Wait until LAY is not busy, then mark it busy. False (and LAY may be freed) when the
   entry left the table while waiting: look the ID up again. Called with l->lock held. */
bool pgd_layer_claim (struct pgd_layers *l, struct layer *lay) __attribute__ ((warn_unused_result));

/* Find (with CREATE, add) the entry of ID and claim it, looking it up again when a
   Remove dropped it meanwhile. NULL: no entry (without CREATE) or out of memory.
   Called with l->lock held. */
struct layer *pgd_layer_claim_id (struct pgd_layers *l, const char *id, bool create);

/* Claim the entry of ID (added when absent) for a request, as pgd_layer_claim_id, except
   that a wait for another claim ends when the request's client has gone
   (pgd_request_gone). NULL with ERR (ECANCELED, or ENOMEM) then; WHAT names the request. */
struct layer *pgd_layer_claim_req (struct pgd_layers *l, const char *id, const char *what,
                                   struct pgd_err *err);

/* Unclaim LAY, claimed for an ID found absent on disk: its entry goes unless it tracks
   a mount. Called with l->lock held. */
void pgd_layer_unclaim_absent (struct pgd_layers *l, struct layer *lay);

/* Clear busy on a claimed LAY and wake waiters; LAY may be freed after it (when
   forgotten meanwhile). Called with l->lock held. */
void pgd_layer_unclaim (struct pgd_layers *l, struct layer *lay);

/* Unmount every layer mounted with no reference (idle ones included); with WAIT, wait
   for layers busy in another thread and unmount them too if idle then. Called with
   l->lock held; drops it while unmounting. Every failure is logged; the first is in
   ERR (-1) after all were tried. */
int pgd_layers_unmount_idle (struct pgd_layers *l, bool wait, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Start and stop the thread that unmounts layers idle for l->linger_ms (idle.c). Start
   is a no-op when linger is 0; stop waits for an unmount in progress. */
int pgd_reaper_start (struct pgd_layers *l, struct pgd_err *err)
    __attribute__ ((warn_unused_result));
void pgd_reaper_stop (struct pgd_layers *l);

/* Create REQ (ID claimed as LAY; STAGING an empty directory, FINAL its place) as an
   online snapshot of its parent when the parent is mounted read-write and idle and the
   engine can and PGD_ONLINE_SNAPSHOT=1: the parent's mount becomes the new layer's (left idle,
   mounted), the parent is unmounted, its image final. *DONE false (and 0): not applicable or failed
   before anything changed; the regular path follows. With *DONE, -1 means the layer was
   not created (nothing of it left) and the parent is unmounted. */
int pgd_store_create_online (struct pgd_layers *l, const struct pgd_create_req *req,
                             struct layer *lay, const char *staging, const char *final, bool *done,
                             struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Apply Init options and Home; persist them when PERSIST. */
int pgd_store_init (struct pgd_layers *l, const struct pgd_init_req *req, bool persist,
                    struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Before an Init with HOME: when it is not the Home served now, refuse (EBUSY, naming
   the layers) while a layer of the current Home is held, else unmount its idle layers
   and forget them all (move.c). Nothing to do on the first Init or the same Home. */
int pgd_store_leave_home (struct pgd_layers *l, const char *home, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Load the persisted Init state, if any. */
int pgd_store_load (struct pgd_layers *l, struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Start-up recovery under Home: sweep staging, drop half-applied layers, adopt mounts. */
void pgd_store_recover (struct pgd_layers *l);

/* The operations of the table (ops.c checks IDs, then calls these). ID and PARENT are
   valid IDs (pgd_id_valid): paths are built from them. */
int pgd_store_create (void *ctx, const struct pgd_create_req *req, struct pgd_err *err);
int pgd_store_remove (void *ctx, const char *id, struct pgd_err *err);
int pgd_store_get (void *ctx, const char *id, const char *mount_label, char **dir,
                   struct pgd_err *err);
int pgd_store_put (void *ctx, const char *id, struct pgd_err *err);
int pgd_store_exists (void *ctx, const char *id, bool *exists, struct pgd_err *err);

/* The Status, GetMetadata and Cleanup operations. */
int pgd_store_status (void *ctx, struct pgd_kvlist *out, struct pgd_err *err);
int pgd_store_metadata (void *ctx, const char *id, struct pgd_kvlist *out, struct pgd_err *err);

/* The diff operations (layerdiff.c). */
int pgd_layers_diff_open (void *ctx, const char *id, const char *parent, void **stream,
                          struct pgd_err *err);
int pgd_layers_diff_write (void *stream, int fd, struct pgd_err *err);
void pgd_layers_diff_close (void *stream);
int pgd_layers_changes (void *ctx, const char *id, const char *parent, struct pgd_changes *out,
                        struct pgd_err *err);
int pgd_layers_apply_diff (void *ctx, const char *id, const char *parent, int fd, int64_t *size,
                           struct pgd_err *err);
int pgd_layers_diff_size (void *ctx, const char *id, const char *parent, int64_t *size,
                          struct pgd_err *err);

#endif
