/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Engines turn a ploop image directory into a mounted ext4 directory.
   user:   our delta-chain server process -> one file exported through FUSE ->
           loop device -> ext4 (works on any kernel with FUSE and loop)
   kernel: libploop's ploop_mount_image (needs the ploop module) */
#ifndef PGD_ENGINE_H
#define PGD_ENGINE_H

#include <errno.h>

#include <limits.h>
#include <stdbool.h>

#include "err.h"
/* The engine's one public header: serving images (below) and making them (image.h:
   create, clone, grow, check, info through libploop). */
#include "image.h"

enum pgd_engine_kind
{
  PGD_ENGINE_USER = 0,
  PGD_ENGINE_KERNEL = 1,
};

/* Engine configuration, set up once. */
struct pgd_engine
{
  enum pgd_engine_kind kind;
  char exe[PATH_MAX];     /* binary that serves images ("serve-image" sub-mode) */
  char srv_exe[PATH_MAX]; /* the lean image-server binary beside EXE, "" if absent */
  /* user engine tuning, defaults from pgd_engine_setup */
  bool loop_dio;        /* loop device does direct I/O on the exported file */
  bool fuse_dio;        /* the exported file bypasses the FUSE page cache */
  bool delta_dio;       /* the server reads and writes delta data with O_DIRECT */
  unsigned srv_threads; /* FUSE worker threads per image server */
  unsigned srv_max_io;  /* bytes per FUSE request (64 KiB .. 1 MiB) */
  unsigned stall_ms;    /* an image server with no progress this long while a step waits
                           on it is declared dead (killed, FUSE aborted); 0: no bound */
};

/* Default bound on a wait for an image server that makes no progress at all. */
#define PGD_SERVER_STALL_MS 30000

/* The errnum of a mount or unmount whose image server made no progress for stall_ms
   and was declared dead (killed, its FUSE connection aborted). */
#define PGD_ESTALLED ETIME

enum
{
  PGD_MOUNT_RO = 1 << 0,     /* every delta read-only, ext4 mounted ro */
  PGD_MOUNT_MKFS = 1 << 1,   /* make a fresh ext4 on the device before mounting */
  PGD_MOUNT_RESIZE = 1 << 2, /* grow ext4 to the device size before mounting (offline
                                resize2fs: no CAP_SYS_RESOURCE needed, unlike online) */
};

/* Pick the engine: NAME is "auto" (kernel when /proc/vz/ploop_minor exists), "kernel"
   or "user". EXE is the binary with the serve-image sub-mode (NULL = /proc/self/exe). */
int pgd_engine_setup (struct pgd_engine *e, const char *name, const char *exe, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Mount the image in IMAGE_DIR at the existing directory TARGET. RUN_DIR is a private
   per-image directory for the engine's runtime state (FUSE mount point, pid file, the
   server's log). MOUNT_OPTS (may be NULL) are extra ext4 options, e.g. an SELinux
   context=. A top delta left in use by a dead server is checked and repaired first;
   EBUSY when another process serves the image; PGD_ESTALLED when the server stalled
   (every step that waits on it is watched). Read-write mounts are noatime. Undoes
   every step on failure. */
int pgd_engine_mount (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                      const char *target, unsigned flags, const char *mount_opts,
                      struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Undo pgd_engine_mount: unmount TARGET, detach the device, stop the server and close
   the image cleanly. Succeeds when nothing is mounted. Leaves no loop device, FUSE
   mount or process behind; PGD_ESTALLED when the server stalled and was declared dead
   (what was left of the mount is torn down all the same). */
int pgd_engine_umount (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                       const char *target, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* pgd_engine_umount for an image about to be deleted: nothing is flushed, the
   filesystem is shut down (no write-back, not even its journal) before the unmount.
   The image may be left inconsistent: delete it. Leaves nothing behind either. */
int pgd_engine_discard (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                        const char *target, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* True when the image in IMAGE_DIR is mounted at TARGET by this engine and its server
   (user engine) is alive: a restarted plugin adopts such a mount. */
bool pgd_engine_is_mounted (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                            const char *target);

/* Called by pgd_engine_snapshot while the filesystem is frozen, once the image was
   switched: nothing was written since the snapshot point. */
typedef void (*pgd_engine_frozen_fn) (void *ctx);

/* Online snapshot of the image in IMAGE_DIR, mounted read-write and idle at TARGET
   (RUN_DIR its state): CHILD_DIR (existing, empty; keep it in staging until this
   returns) becomes a clone of it, and the mount goes on as the child's: the filesystem
   is frozen (flushed and consistent), the image server closes the parent's top (from
   then on the parent's image, unchanged, closed cleanly) and from then on writes into
   the child's new top; FROZEN (may be NULL) runs before the thaw. CHILD_RUN and
   CHILD_TARGET are the child's run directory (must not exist but as an empty directory)
   and mount point, where pgd_engine_handover moves the mount next. ENOTSUP when the
   engine cannot (kernel: unmount, then clone); on any failure the parent is mounted
   and served as before and CHILD_DIR is empty, unless its server died (ETIMEDOUT).
   A crash before the handover leaves a marker pgd_engine_snapshot_pending sees. */
int pgd_engine_snapshot (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                         const char *target, const char *child_dir, const char *child_run,
                         const char *child_target, pgd_engine_frozen_fn frozen, void *ctx,
                         struct pgd_err *err) __attribute__ ((warn_unused_result));

/* After pgd_engine_snapshot: the mount at TARGET (state in RUN_DIR) becomes the child's,
   at CHILD_TARGET (an existing directory) with its state in CHILD_RUN; TARGET is left
   unmounted and RUN_DIR gone. On failure the caller unmounts what is left (at
   CHILD_TARGET and TARGET, state in RUN_DIR or CHILD_RUN, whichever exists). */
int pgd_engine_handover (const struct pgd_engine *e, const char *run_dir, const char *target,
                         const char *child_run, const char *child_target, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* True when RUN_DIR holds a snapshot whose handover never finished (a crash). */
bool pgd_engine_snapshot_pending (const char *run_dir);

/* Take down what such a snapshot left: both mount points, the device, the server (its
   image is closed cleanly). IMAGE_DIR names the image in messages. */
int pgd_engine_snapshot_abort (const struct pgd_engine *e, const char *image_dir,
                               const char *run_dir, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

#endif
