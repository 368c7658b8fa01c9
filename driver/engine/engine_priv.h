/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Private to the engine: what engine.c, user.c, kernel.c, server.c and ext4.c share.

   User engine state lives in RUN_DIR so that a restarted plugin can unmount what an
   earlier one mounted: fuse/ (the server's FUSE mount, holding "disk"), server.pid
   ("PID STARTTIME"), server.status (written by the server when it exits), server.log
   (its stderr). The loop device is found through sysfs by its backing file. */
#ifndef PGD_ENGINE_PRIV_H
#define PGD_ENGINE_PRIV_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine.h"

#define FUSE_SUBDIR "fuse"
#define DISK_FILE "disk"
#define PID_FILE "server.pid"
#define STATUS_FILE "server.status"
#define LOG_FILE "server.log"
#define READY_FD 3
#define LOG_MAX (1 << 20) /* server.log is started afresh beyond this */

#define SERVER_START_TIMEOUT_MS 30000
#define SERVER_EXIT_TIMEOUT_MS 300000 /* the last flush may write back a lot */
#define LOOP_DETACH_TIMEOUT_MS 10000
#define FUSE_UMOUNT_TIMEOUT_MS 5000
#define TARGET_UMOUNT_TIMEOUT_MS 1000

/* 4 workers x 256 KiB requests: as fast as 1 MiB requests here, 1.5 MiB less memory */
#define DEFAULT_SRV_THREADS 4
#define SERVER_BINARY "ploop-graphdriver-serve-image" /* links libfuse3 and libc only */
#define DEFAULT_SRV_MAX_IO (256u * 1024)
/* loop direct I/O on the FUSE file: no second page-cache copy, 2x faster (measured) */
#define DEFAULT_LOOP_DIO true
/* O_DIRECT on the deltas: no page cache allocated (or dirtied) in the server's I/O path,
   so memory reclaim cannot make it wait on writeback that needs itself (PLOOP.md §6.4) */
#define DEFAULT_DELTA_DIO true

/* The files of one served image: its DiskDescriptor and RUN_DIR's entries. */
struct pgd_srv_paths
{
  char dd[PATH_MAX];
  char run[PATH_MAX];
  char fuse[PATH_MAX];
  char disk[PATH_MAX];
  char pid[PATH_MAX];
  char status[PATH_MAX];
  char log[PATH_MAX];
};

/* Fill P for IMAGE_DIR and RUN_DIR (which must exist; resolved so that paths match what
   sysfs shows); ENAMETOOLONG when a path does not fit. ERR may be NULL. */
int pgd_srv_paths (struct pgd_srv_paths *p, const char *image_dir, const char *run_dir,
                   struct pgd_err *err) __attribute__ ((warn_unused_result));

/* True when the server recorded in P's pid file is that very process and still runs. */
bool pgd_srv_alive (const struct pgd_srv_paths *p);

/* The server recorded in P's pid file: its pid and start time; false when none. */
bool pgd_srv_read (const struct pgd_srv_paths *p, pid_t *pid, unsigned long long *start);

/* Start the image server of P (read-only deltas when RO) and wait for its READY line:
   its FUSE mount then holds the disk file. *PID is the server. */
int pgd_srv_spawn (const struct pgd_engine *e, const struct pgd_srv_paths *p, bool ro, pid_t *pid,
                   struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Record PID (with its start time, so a reused pid is never taken for it) as the
   server of P, atomically. */
int pgd_srv_record (const struct pgd_srv_paths *p, pid_t pid, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Stop the server of P (FUSE unmount, wait for its exit), check that it closed the image
   cleanly and forget its run state. Succeeds when no server ran. */
int pgd_srv_stop (const struct pgd_srv_paths *p, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* umount PATH, retrying EBUSY for TIMEOUT_MS; success when it is not mounted. */
int pgd_umount_retry (const char *path, unsigned timeout_ms, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* mkfs.ext4 on DEV with the engine's fast options. */
int pgd_mkfs_ext4 (const char *dev, struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Offline grow of a cleanly unmounted ext4 on DEV to DEV's size. */
int pgd_resize_ext4 (const char *dev, struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Mount the ext4 on DEV at TARGET (RO or read-write noatime) with extra OPTS (may be NULL). */
int pgd_mount_ext4 (const char *dev, const char *target, bool ro, const char *opts,
                    struct pgd_err *err) __attribute__ ((warn_unused_result));

/* The user engine (user.c): pgd_engine_mount / pgd_engine_umount for PGD_ENGINE_USER. */
int pgd_user_mount (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                    const char *target, unsigned flags, const char *opts, struct pgd_err *err)
    __attribute__ ((warn_unused_result));
/* DISCARD: the image is about to be deleted (pgd_engine_discard). */
int pgd_user_umount (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                     const char *target, bool discard, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* The kernel engine (kernel.c, libploop; needs the ploop module). */
int pgd_kernel_mount (const char *image_dir, const char *target, unsigned flags, const char *opts,
                      struct pgd_err *err) __attribute__ ((warn_unused_result));
int pgd_kernel_umount (const char *image_dir, const char *target, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

#endif
