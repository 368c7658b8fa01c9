/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Engines: user (our image server -> FUSE file -> loop -> ext4, user.c and server.c)
   and kernel (libploop, kernel.c). This file picks one and dispatches to it. */
#include "engine_priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"
#include "watchdog.h"

#define PLOOP_MODULE_PROBE "/proc/vz/ploop_minor"

int
pgd_engine_setup (struct pgd_engine *e, const char *name, const char *exe, struct pgd_err *err)
{
  bool module = access (PLOOP_MODULE_PROBE, R_OK) == 0;

  memset (e, 0, sizeof *e);
  if (name == NULL || strcmp (name, "auto") == 0)
    e->kind = module ? PGD_ENGINE_KERNEL : PGD_ENGINE_USER;
  else if (strcmp (name, "user") == 0)
    e->kind = PGD_ENGINE_USER;
  else if (strcmp (name, "kernel") == 0)
    {
      if (!module)
        return pgd_error (err, ENODEV, "engine kernel: the ploop module is not loaded (%s)",
                          PLOOP_MODULE_PROBE);
      e->kind = PGD_ENGINE_KERNEL;
    }
  else
    return pgd_error (err, EINVAL, "unknown engine \"%s\" (auto, user or kernel)", name);
  if (exe == NULL)
    exe = "/proc/self/exe";
  if (exe[0] != '/')
    {
      /* the server is started from "/" */
      if (realpath (exe, e->exe) == NULL)
        return pgd_error (err, errno, "engine binary %s", exe);
    }
  else if (snprintf (e->exe, sizeof e->exe, "%s", exe) >= (int)sizeof e->exe)
    return pgd_error (err, ENAMETOOLONG, "engine binary %s", exe);
  if (e->kind == PGD_ENGINE_USER && access (e->exe, X_OK) < 0)
    return pgd_error (err, errno, "engine binary %s", e->exe);
  /* the lean server binary beside EXE, when it was built and installed with it */
  if (e->kind == PGD_ENGINE_USER)
    {
      char dir[PATH_MAX];
      char *slash = realpath (e->exe, dir) ? strrchr (dir, '/') : NULL; /* /proc/self/exe */
      if (slash)
        *slash = '\0';
      if (slash == NULL
          || snprintf (e->srv_exe, sizeof e->srv_exe, "%s/" SERVER_BINARY, dir)
                 >= (int)sizeof e->srv_exe
          || access (e->srv_exe, X_OK) < 0)
        e->srv_exe[0] = '\0';
    }
  e->srv_threads = DEFAULT_SRV_THREADS;
  e->srv_max_io = DEFAULT_SRV_MAX_IO;
  e->loop_dio = DEFAULT_LOOP_DIO;
  e->delta_dio = DEFAULT_DELTA_DIO;
  e->fuse_dio = false;
  e->stall_ms = PGD_SERVER_STALL_MS;
  return 0;
}

int
pgd_engine_mount (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                  const char *target, unsigned flags, const char *mount_opts, struct pgd_err *err)
{
  if (e->kind == PGD_ENGINE_KERNEL)
    return pgd_kernel_mount (image_dir, target, flags, mount_opts, err);
  return pgd_user_mount (e, image_dir, run_dir, target, flags, mount_opts, err);
}

int
pgd_engine_umount (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                   const char *target, struct pgd_err *err)
{
  if (e->kind == PGD_ENGINE_KERNEL)
    return pgd_kernel_umount (image_dir, target, err);
  return pgd_user_umount (e, image_dir, run_dir, target, false, err);
}

int
pgd_engine_discard (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                    const char *target, struct pgd_err *err)
{
  if (e->kind == PGD_ENGINE_KERNEL)
    return pgd_kernel_umount (image_dir, target, err);
  return pgd_user_umount (e, image_dir, run_dir, target, true, err);
}

bool
pgd_engine_is_mounted (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                       const char *target)
{
  struct pgd_srv_paths p;

  if (!pgd_is_mountpoint (target))
    return false;
  if (e->kind == PGD_ENGINE_KERNEL)
    return true;
  /* a stopped server (SIGSTOP) answers nothing: the mount is not handed out again */
  unsigned long long start;
  pid_t pid;
  return pgd_srv_paths (&p, image_dir, run_dir, NULL) == 0 && pgd_is_mountpoint (p.fuse)
         && pgd_srv_alive (&p) && pgd_srv_read (&p, &pid, &start) && !pgd_proc_stopped (pid);
}
