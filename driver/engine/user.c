/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The user engine: our image server exports the delta chain as one file through FUSE,
   a loop device sits on that file, ext4 is mounted on the loop device. */
#include "engine_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chain.h"
#include "fsck.h"
#include "image.h"
#include "jhead.h"
#include "log.h"
#include "loop.h"
#include "util.h"
#include "watchdog.h"

/* ext4's shutdown ioctl (EXT4_IOC_SHUTDOWN, XFS's GOINGDOWN number; not in the uapi
   headers here): with NOLOGFLUSH nothing more is written, not even the journal. */
#define FS_IOC_SHUTDOWN _IOR ('X', 125, uint32_t)
#define SHUTDOWN_NOLOGFLUSH 0x2

/* Detach whatever loop device still serves our disk file. */
static int
release_loop (const struct pgd_srv_paths *p, struct pgd_err *err)
{
  int nr;

  if (!pgd_loop_find (p->disk, &nr))
    return 0;
  /* autoclear detaches it once the filesystem lets go */
  if (pgd_loop_wait_detached (nr, p->disk, LOOP_DETACH_TIMEOUT_MS, err) == 0)
    return 0;
  if (pgd_loop_detach (nr, err) < 0)
    return pgd_error_wrap (err, "loop device of %s is still in use", p->dd);
  return pgd_loop_wait_detached (nr, p->disk, LOOP_DETACH_TIMEOUT_MS, err);
}

/* A top left in use means its server died: repair it while nobody serves it. */
static int
repair_if_needed (const char *image_dir, const struct pgd_srv_paths *p, struct pgd_err *err)
{
  bool in_use = false;
  int lock_fd, rc;

  if (pgd_chain_lock (p->dd, &lock_fd, err) < 0)
    return -1;
  rc = pgd_chain_top_in_use (p->dd, &in_use, err);
  /* libploop takes this lock itself (PLOOP.md §5.4 pitfall 12) */
  close (lock_fd);
  if (rc < 0 || !in_use)
    return rc;
  pgd_log (PGD_LOG_WARN, "image %s was not closed cleanly: checking and repairing it", image_dir);
  return pgd_image_check (image_dir, true, err);
}

/* The steps of pgd_user_mount after its server is up: the loop device on the exported
   file, the filesystem check, mkfs or resize when asked, the ext4 mount. The device is
   left to the caller's undo on failure (release_loop). */
static int
device_steps (const struct pgd_engine *e, const char *image_dir, const struct pgd_srv_paths *p,
              const char *target, unsigned flags, const char *opts, uint64_t t0,
              struct pgd_err *err)
{
  bool ro = flags & PGD_MOUNT_RO;
  unsigned t_loop, t_mkfs = 0;
  char dev[64];
  int nr = -1, loop_fd = -1;

  int file_fd = open (p->disk, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (file_fd < 0)
    return pgd_error (err, errno, "open %s", p->disk);
  int rc = pgd_loop_attach (file_fd, (ro ? PGD_LOOP_RO : 0) | (e->loop_dio ? PGD_LOOP_DIO : 0), &nr,
                            &loop_fd, err);
  close (file_fd);
  if (rc < 0)
    return -1;
  pgd_loop_path (nr, dev, sizeof dev);
  t_loop = pgd_elapsed_ms (t0);
  if (!ro && !(flags & PGD_MOUNT_MKFS))
    rc = pgd_fs_check (image_dir, dev, err);
  if (rc == 0 && (flags & (PGD_MOUNT_MKFS | PGD_MOUNT_RESIZE)) && ro)
    rc = pgd_error (err, EINVAL, "mkfs or resize on a read-only mount");
  if (rc == 0 && (flags & PGD_MOUNT_MKFS))
    {
      rc = pgd_mkfs_ext4 (dev, err);
      t_mkfs = pgd_elapsed_ms (t0);
    }
  else if (rc == 0 && (flags & PGD_MOUNT_RESIZE))
    rc = pgd_resize_ext4 (dev, err);
  if (rc == 0)
    rc = pgd_mount_ext4 (dev, target, ro, opts, err);
  /* the mount holds the device now; our close leaves autoclear to the umount */
  close (loop_fd);
  if (rc == 0)
    pgd_log (PGD_LOG_DEBUG, "%s on %s: loop ready at %u ms, mkfs done at %u ms", image_dir, dev,
             t_loop, t_mkfs);
  return rc;
}

int
pgd_user_mount (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                const char *target, unsigned flags, const char *opts, struct pgd_err *err)
{
  bool ro = flags & PGD_MOUNT_RO;
  uint64_t t0 = pgd_now_ns ();
  unsigned t_srv;
  struct pgd_srv_paths p;
  pid_t pid = 0;

  if (pgd_mkdir_p (run_dir, 0700, err) < 0 || pgd_srv_paths (&p, image_dir, run_dir, err) < 0)
    return -1;
  if (mkdir (p.fuse, 0700) < 0 && errno != EEXIST)
    return pgd_error (err, errno, "mkdir %s", p.fuse);
  if (pgd_is_mountpoint (target))
    return pgd_error (err, EBUSY, "%s is already mounted", target);
  if (pgd_is_mountpoint (p.fuse))
    {
      if (pgd_srv_alive (&p))
        return pgd_error (err, EBUSY, "image %s is already served at %s", image_dir, p.fuse);
      /* left by a server that died */
      if (umount2 (p.fuse, MNT_DETACH) < 0)
        return pgd_error (err, errno, "umount stale %s", p.fuse);
    }
  if (repair_if_needed (image_dir, &p, err) < 0)
    return -1;

  if (pgd_srv_spawn (e, &p, ro, &pid, err) < 0 || pgd_srv_record (&p, pid, err) < 0)
    goto undo;
  t_srv = pgd_elapsed_ms (t0);
  {
    /* every step from here waits on the server: bounded by its progress */
    struct pgd_watch w;
    unsigned long long start = 0;
    if (!pgd_srv_read (&p, &pid, &start))
      start = 0;
    pgd_watch_start (&w, start ? pid : 0, start, p.fuse, image_dir, e->stall_ms);
    if (getenv ("PGD_TEST_STOP_SERVER") != NULL)
      kill (pid, SIGSTOP); /* test hook (test_stall): a server that stops while mounting */
    int rc = device_steps (e, image_dir, &p, target, flags, opts, t0, err);
    if (pgd_watch_end (&w))
      rc = pgd_error (err, PGD_ESTALLED,
                      "image server %ld made no progress for %u ms and was declared dead "
                      "(killed, its FUSE connection aborted)",
                      (long)pid, e->stall_ms);
    if (rc < 0)
      {
        /* mounted just as the server was declared dead: that mount goes too */
        if (pgd_is_mountpoint (target) && umount2 (target, MNT_DETACH) < 0)
          pgd_log (PGD_LOG_ERROR, "umount %s: %s", target, strerror (errno));
        goto undo;
      }
  }
  pgd_log (PGD_LOG_DEBUG, "mounted %s at %s (ms since start: server ready %u, mounted %u)",
           image_dir, target, t_srv, pgd_elapsed_ms (t0));
  return 0;

undo:
  pgd_error_wrap (err, "mount image %s", image_dir);
  {
    struct pgd_err e2 = { 0 };
    if (release_loop (&p, &e2) < 0 || pgd_srv_stop (&p, &e2) < 0)
      pgd_log (PGD_LOG_ERROR, "undo mount of %s: %s", image_dir, e2.msg);
  }
  return -1;
}

/* The ext4 of P is unmounted and its loop device gone: let the next mount of this
   image or of a clone log from the journal's start (jhead.h), still in the server's
   cluster of the journal superblock. Only saves disk: a failure is logged. */
static void
rewind_journal (const char *image_dir, const struct pgd_srv_paths *p)
{
  struct pgd_err err;
  bool rewound;

  if (pgd_jhead_rewind (p->disk, &rewound, &err) < 0)
    pgd_log (PGD_LOG_WARN, "image %s: journal head left as it is: %s", image_dir, err.msg);
  else if (rewound)
    pgd_log (PGD_LOG_DEBUG, "image %s: journal head rewound", image_dir);
}

/* The steps of pgd_user_umount; P is NULL when the engine never mounted IMAGE_DIR. A
   failed flush still unmounts everything, then fails: closed, but not cleanly. */
/* Stop the filesystem at TARGET writing anything more (its image is being deleted):
   the unmount then writes nothing back. Best effort: a plain unmount follows anyway. */
static void
shut_down (const char *target)
{
  uint32_t how = SHUTDOWN_NOLOGFLUSH;
  cleanup_close int fd = open (target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (fd < 0 || ioctl (fd, FS_IOC_SHUTDOWN, &how) < 0)
    pgd_log (PGD_LOG_DEBUG, "shut down %s: %s", target, strerror (errno));
}

static int
umount_steps (const char *image_dir, const struct pgd_srv_paths *p, const char *target,
              bool discard, struct pgd_err *err)
{
  uint64_t t0 = pgd_now_ns ();
  struct pgd_err flush = { 0 };
  int flushed = 0;
  unsigned t_flush = 0;

  if (pgd_is_mountpoint (target) && discard)
    {
      shut_down (target);
      if (pgd_umount_retry (target, TARGET_UMOUNT_TIMEOUT_MS, err) < 0)
        return -1;
    }
  else if (pgd_is_mountpoint (target))
    {
      /* umount succeeds even when the write-back failed: ask first */
      flushed = pgd_fs_flush (image_dir, target, &flush);
      t_flush = pgd_elapsed_ms (t0);
      if (pgd_umount_retry (target, TARGET_UMOUNT_TIMEOUT_MS, err) < 0)
        return -1;
    }
  if (flushed < 0)
    pgd_log (PGD_LOG_ERROR, "%s", flush.msg);
  unsigned t_fs = pgd_elapsed_ms (t0), t_loop;
  if (p != NULL)
    {
      if (release_loop (p, err) < 0)
        return -1;
      t_loop = pgd_elapsed_ms (t0);
      if (flushed == 0)
        rewind_journal (image_dir, p);
      if (pgd_srv_stop (p, err) < 0)
        {
          /* both said: the flush that failed and how the server ended */
          if (flushed < 0)
            pgd_error_wrap (err, "%s", flush.msg);
          return -1;
        }
      pgd_log (PGD_LOG_DEBUG,
               "unmounted %s from %s (ms since start: flushed %u, ext4 %u, loop %u, server %u)",
               image_dir, target, t_flush, t_fs, t_loop, pgd_elapsed_ms (t0));
    }
  if (flushed < 0)
    {
      *err = flush;
      return -1;
    }
  return 0;
}

int
pgd_user_umount (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                 const char *target, bool discard, struct pgd_err *err)
{
  struct pgd_srv_paths p;
  struct stat st;
  struct pgd_watch w;
  unsigned long long start = 0;
  pid_t pid = 0;

  bool ours = !(stat (run_dir, &st) < 0 && errno == ENOENT); /* else never mounted here */
  if (ours && pgd_srv_paths (&p, image_dir, run_dir, err) < 0)
    return pgd_error_wrap (err, "unmount image %s", image_dir);
  if (ours && !pgd_srv_read (&p, &pid, &start))
    pid = 0;
  /* each step below may wait on the server: bounded by its progress */
  pgd_watch_start (&w, pid, start, ours ? p.fuse : "", image_dir, e->stall_ms);
  int ret = umount_steps (image_dir, ours ? &p : NULL, target, discard, err);
  if (pgd_watch_end (&w))
    {
      pgd_error (err, PGD_ESTALLED,
                 "image server %ld made no progress for %u ms and was declared dead (killed, "
                 "its FUSE connection aborted)",
                 (long)pid, e->stall_ms);
      if (ret == 0 || !pgd_is_mountpoint (target))
        {
          /* torn down all the same: what was left of the server goes too */
          struct pgd_err e2;
          if (umount_steps (image_dir, &p, target, discard, &e2) < 0)
            pgd_log (PGD_LOG_WARN, "unmount image %s: %s", image_dir, e2.msg);
        }
      ret = -1;
    }
  return ret < 0 ? pgd_error_wrap (err, "unmount image %s", image_dir) : 0;
}
