/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Online snapshot of a served image (user engine) and the handover of its mount to the
   child: the parent's ext4 is frozen (consistent on disk, as an LVM snapshot takes it),
   its image server closes the parent's top and goes on with the child's new top, the
   filesystem is thawed, and the mount moves to the child's paths. One mount cycle less
   than unmounting the parent, cloning it and mounting the child.

   A marker in the run directory (SNAP_MARKER: the parent's and the child's mount
   points) lives from before the switch until the handover is done; a plugin that
   finds one at start (it died in between) takes that mount down instead of adopting
   it (pgd_engine_snapshot_abort). */
#include "engine_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgctl.h"
#include "log.h"
#include "loop.h"
#include "util.h"
#include "watchdog.h"

#define SNAP_MARKER "snapshot"

static void
marker_path (char *buf, size_t len, const char *run)
{
  pgd_pathf (buf, len, "%s/" SNAP_MARKER, run);
}

/* Send one command to the server of P; its errno comes back as the write's. */
static int
send_command (const struct pgd_srv_paths *p, const char *cmd, struct pgd_err *err)
{
  char ctl[PATH_MAX + 16];
  size_t len = strlen (cmd);

  pgd_pathf (ctl, sizeof ctl, "%s/%s", p->fuse, PGD_IMGCTL_NAME);
  cleanup_close int fd = open (ctl, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return pgd_error (err, errno, "open %s", ctl);
  ssize_t n = write (fd, cmd, len);
  if (n < 0)
    return pgd_error (err, errno, "image server of %s", p->dd);
  if ((size_t)n != len)
    return pgd_error (err, EIO, "image server of %s took %zd of %zu bytes", p->dd, n, len);
  return 0;
}

/* Freeze TARGET's filesystem, switch the server of P onto TOP (the child image's DD
   CHILD_DD, status file STATUS), run FROZEN, thaw. */
static int
switch_frozen (const struct pgd_srv_paths *p, const char *target, const char *cmd,
               pgd_engine_frozen_fn frozen, void *ctx, unsigned *ms, struct pgd_err *err)
{
  cleanup_close int fd = open (target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  uint64_t t0 = pgd_now_ns ();
  int rc;

  if (fd < 0)
    return pgd_error (err, errno, "open %s", target);
  /* writes back and commits everything: the image is consistent as it stands */
  if (ioctl (fd, FIFREEZE, 0) < 0)
    return pgd_error (err, errno, "freeze %s", target);
  ms[0] = pgd_elapsed_ms (t0);
  rc = send_command (p, cmd, err);
  ms[1] = pgd_elapsed_ms (t0);
  if (rc == 0 && frozen)
    frozen (ctx);
  ms[2] = pgd_elapsed_ms (t0);
  int thawed = ioctl (fd, FITHAW, 0);
  ms[3] = pgd_elapsed_ms (t0);
  if (thawed < 0)
    {
      struct pgd_err e2;
      pgd_error (&e2, errno, "thaw %s", target);
      pgd_log (PGD_LOG_ERROR, "%s", e2.msg);
      if (rc == 0)
        {
          *err = e2;
          rc = -1;
        }
    }
  return rc;
}

/* CHILD_RUN (not existing yet) as pgd_srv_paths would resolve it, into BUF. */
static int
resolve_new (const char *path, char *buf, size_t len, struct pgd_err *err)
{
  char dir[PATH_MAX], real[PATH_MAX];
  const char *slash = strrchr (path, '/');

  if (slash == NULL || (size_t)(slash - path) >= sizeof dir)
    return pgd_error (err, EINVAL, "run directory %s", path);
  memcpy (dir, path, (size_t)(slash - path));
  dir[slash - path] = '\0';
  if (realpath (dir[0] ? dir : "/", real) == NULL)
    return pgd_error (err, errno, "%s", dir);
  if (snprintf (buf, len, "%s/%s", real, slash + 1) >= (int)len)
    return pgd_error (err, ENAMETOOLONG, "%s", path);
  return 0;
}

int
pgd_engine_snapshot (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                     const char *target, const char *child_dir, const char *child_run,
                     const char *child_target, pgd_engine_frozen_fn frozen, void *ctx,
                     struct pgd_err *err)
{
  char top[PATH_MAX], child[PATH_MAX], marker[PATH_MAX + 16], status[PATH_MAX + 32];
  char crun[PATH_MAX];
  char cmd[4 * PATH_MAX + 64], line[2 * PATH_MAX + 4];
  struct pgd_srv_paths p;
  struct pgd_watch w;
  unsigned long long start;
  pid_t pid;
  uint64_t t0 = pgd_now_ns ();

  if (e->kind != PGD_ENGINE_USER)
    return pgd_error (err, ENOTSUP, "online snapshot: not with the %s engine", "kernel");
  if (pgd_srv_paths (&p, image_dir, run_dir, err) < 0)
    return -1;
  if (!pgd_is_mountpoint (target) || !pgd_srv_read (&p, &pid, &start) || !pgd_srv_alive (&p))
    return pgd_error (err, ESRCH, "online snapshot: %s is not served", image_dir);
  if (resolve_new (child_run, crun, sizeof crun, err) < 0
      || pgd_image_clone_served (image_dir, child_dir, top, sizeof top, err) < 0)
    return -1;
  if (realpath (child_dir, child) == NULL)
    return pgd_error (err, errno, "%s", child_dir);
  /* the server's status goes where the run directory will be after the handover */
  int n = snprintf (line, sizeof line, "%s\n%s\n", target, child_target);
  marker_path (marker, sizeof marker, p.run);
  if ((size_t)n >= sizeof line || pgd_write_file_atomic (marker, line, (size_t)n, err) < 0)
    goto undo;
  pgd_pathf (status, sizeof status, "%s/" STATUS_FILE, crun);
  snprintf (cmd, sizeof cmd, PGD_IMGCTL_SNAPSHOT "\n%s\n%s/%s\n%s\n", top, child, PGD_IMAGE_DD,
            status);
  pgd_watch_start (&w, pid, start, p.fuse, image_dir, e->stall_ms);
  unsigned t_clone = pgd_elapsed_ms (t0), ms[4] = { 0, 0, 0, 0 };
  int rc = switch_frozen (&p, target, cmd, frozen, ctx, ms, err);
  if (pgd_watch_end (&w))
    rc = pgd_error (err, PGD_ESTALLED,
                    "image server %ld made no progress for %u ms and was declared dead", (long)pid,
                    e->stall_ms);
  if (rc < 0)
    {
      unlink (marker);
      goto undo;
    }
  pgd_log (PGD_LOG_DEBUG,
           "online snapshot of %s into %s in %u ms (ms: clone and marker %u, freeze %u, "
           "switch %u, tracker %u, thaw %u)",
           image_dir, child_dir, pgd_elapsed_ms (t0), t_clone, ms[0], ms[1] - ms[0], ms[2] - ms[1],
           ms[3] - ms[2]);
  return 0;

undo:
  {
    struct pgd_err e2;
    if (pgd_rm_rf (child_dir, &e2) < 0 || pgd_mkdir_p (child_dir, 0700, &e2) < 0)
      pgd_log (PGD_LOG_WARN, "%s", e2.msg);
  }
  return pgd_error_wrap (err, "online snapshot of %s", image_dir);
}

int
pgd_engine_handover (const struct pgd_engine *e, const char *run_dir, const char *target,
                     const char *child_run, const char *child_target, struct pgd_err *err)
{
  char marker[PATH_MAX + 16];

  (void)e;
  /* a bind mount works whatever the propagation of the parent mount (a move does not
     under a shared one); the parent's own mount then goes */
  if (mount (target, child_target, NULL, MS_BIND, NULL) < 0)
    return pgd_error (err, errno, "bind %s to %s", target, child_target);
  if (umount2 (target, UMOUNT_NOFOLLOW) < 0 && umount2 (target, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
    pgd_log (PGD_LOG_WARN, "umount %s after its handover: %s", target, strerror (errno));
  if (rmdir (child_run) < 0 && errno != ENOENT)
    return pgd_error (err, errno, "remove %s", child_run);
  /* the FUSE mount, the pid file and the log go along; the loop device's backing file
     is shown by its current path */
  if (rename (run_dir, child_run) < 0)
    return pgd_error (err, errno, "rename %s to %s", run_dir, child_run);
  marker_path (marker, sizeof marker, child_run);
  if (unlink (marker) < 0)
    return pgd_error (err, errno, "remove %s", marker);
  return 0;
}

bool
pgd_engine_snapshot_pending (const char *run_dir)
{
  char marker[PATH_MAX + 16];

  marker_path (marker, sizeof marker, run_dir);
  return access (marker, F_OK) == 0;
}

int
pgd_engine_snapshot_abort (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                           struct pgd_err *err)
{
  char marker[PATH_MAX + 16];
  cleanup_free char *data = NULL;
  char *save = NULL;

  marker_path (marker, sizeof marker, run_dir);
  if (pgd_read_file (marker, &data, NULL, err) < 0)
    return -1;
  /* both mount points may hold the filesystem: neither is anyone's now */
  for (char *t = strtok_r (data, "\n", &save); t; t = strtok_r (NULL, "\n", &save))
    if (t[0] == '/' && pgd_is_mountpoint (t) && umount2 (t, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
      pgd_log (PGD_LOG_WARN, "umount %s: %s", t, strerror (errno));
  struct pgd_err e2;
  if (pgd_user_umount (e, image_dir, run_dir, "/nonexistent", false, &e2) < 0)
    pgd_log (PGD_LOG_WARN, "%s (a snapshot cut short)", e2.msg);
  if (unlink (marker) < 0 && errno != ENOENT)
    return pgd_error (err, errno, "remove %s", marker);
  return 0;
}
