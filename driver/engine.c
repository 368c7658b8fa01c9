/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Engines: user (our image server -> FUSE file -> loop -> ext4) and kernel (libploop).

   User engine state lives in RUN_DIR so that a restarted plugin can unmount what an
   earlier one mounted: fuse/ (the server's FUSE mount, holding "disk"), server.pid
   ("PID STARTTIME"), server.status (written by the server when it exits), server.log
   (its stderr). The loop device is found through sysfs by its backing file. */
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ploop/libploop.h>

#include "chain.h"
#include "image.h"
#include "log.h"
#include "loop.h"
#include "util.h"

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

/* Fast mkfs; the kernel must then not zero inode tables behind our back
   (noinit_itable) or every layer would allocate clusters for them. */
#ifndef MKFS_EXT4_EXTENDED
#define MKFS_EXT4_EXTENDED "lazy_itable_init=1,lazy_journal_init=1,nodiscard"
#endif
#ifndef RW_MOUNT_DATA
#define RW_MOUNT_DATA "noinit_itable"
#endif
#define RO_MOUNT_DATA "noload"
/* atime updates of files read from a lower layer would copy inode-table clusters into
   every container's top delta (measured: 4 of 10 clusters of a small container) */
#ifndef RW_MOUNT_FLAGS
#define RW_MOUNT_FLAGS MS_NOATIME
#endif

#define PLOOP_MODULE_PROBE "/proc/vz/ploop_minor"

struct paths
{
  char dd[PATH_MAX];
  char run[PATH_MAX];
  char fuse[PATH_MAX];
  char disk[PATH_MAX];
  char pid[PATH_MAX];
  char status[PATH_MAX];
  char log[PATH_MAX];
};

static void
sleep_ms (unsigned ms)
{
  struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
  while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
    ;
}

static unsigned
elapsed_ms (uint64_t since)
{
  return (unsigned)((pgd_now_ns () - since) / 1000000ULL);
}

/* RUN_DIR must exist; it is resolved so that paths match what sysfs shows. */
static int
make_paths (struct paths *p, const char *image_dir, const char *run_dir, struct pgd_err *err)
{
  if (realpath (run_dir, p->run) == NULL)
    return pgd_error (err, errno, "run directory %s", run_dir);
  if (snprintf (p->dd, sizeof p->dd, "%s/%s", image_dir, PGD_IMAGE_DD) >= (int)sizeof p->dd
      || snprintf (p->fuse, sizeof p->fuse, "%s/%s", p->run, FUSE_SUBDIR) >= (int)sizeof p->fuse
      || snprintf (p->disk, sizeof p->disk, "%s/%s", p->fuse, DISK_FILE) >= (int)sizeof p->disk
      || snprintf (p->pid, sizeof p->pid, "%s/%s", p->run, PID_FILE) >= (int)sizeof p->pid
      || snprintf (p->status, sizeof p->status, "%s/%s", p->run, STATUS_FILE)
             >= (int)sizeof p->status
      || snprintf (p->log, sizeof p->log, "%s/%s", p->run, LOG_FILE) >= (int)sizeof p->log)
    return pgd_error (err, ENAMETOOLONG, "paths for %s", run_dir);
  return 0;
}

/* ---- server process identity --------------------------------------------------------- */

/* Start time of PID in clock ticks since boot (field 22 of /proc/PID/stat); 0 if gone
   or exited (a zombie). */
static unsigned long long
proc_starttime (pid_t pid)
{
  char path[64];
  cleanup_free char *data = NULL;
  unsigned long long st = 0;
  char *p;

  snprintf (path, sizeof path, "/proc/%ld/stat", (long)pid);
  if (pgd_read_file (path, &data, NULL, NULL) < 0)
    return 0;
  p = strrchr (data, ')');
  if (p == NULL || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
    return 0; /* a zombie has exited: its FUSE connection is dead */
  p++;
  for (int field = 3; field < 22 && p; field++)
    p = strchr (p + 1, ' ');
  if (p == NULL || sscanf (p, " %llu", &st) != 1)
    return 0;
  return st;
}

static int
write_pid_file (const struct paths *p, pid_t pid, struct pgd_err *err)
{
  char line[64];
  int n = snprintf (line, sizeof line, "%ld %llu\n", (long)pid, proc_starttime (pid));
  return pgd_write_file_atomic (p->pid, line, (size_t)n, err);
}

/* The server recorded in the pid file, if that very process still runs. */
static bool
read_server (const struct paths *p, pid_t *pid, unsigned long long *start)
{
  cleanup_free char *data = NULL;
  long v;

  if (pgd_read_file (p->pid, &data, NULL, NULL) < 0)
    return false;
  if (sscanf (data, "%ld %llu", &v, start) != 2 || v <= 0)
    return false;
  *pid = (pid_t)v;
  return true;
}

static bool
server_alive (const struct paths *p)
{
  unsigned long long start;
  pid_t pid;

  return read_server (p, &pid, &start) && start != 0 && proc_starttime (pid) == start;
}

/* Wait until the server recorded in the pid file has exited. */
static int
wait_server_exit (const struct paths *p, struct pgd_err *err)
{
  unsigned long long start;
  struct pollfd pfd;
  pid_t pid;
  int rc;

  if (!read_server (p, &pid, &start))
    return 0;
  pfd.fd = (int)syscall (SYS_pidfd_open, pid, 0);
  if (pfd.fd < 0)
    return errno == ESRCH ? 0 : pgd_error (err, errno, "pidfd of server %ld", (long)pid);
  /* the pidfd pins the process: check it is still ours */
  if (proc_starttime (pid) != start)
    {
      close (pfd.fd);
      return 0;
    }
  pfd.events = POLLIN;
  do
    rc = poll (&pfd, 1, SERVER_EXIT_TIMEOUT_MS);
  while (rc < 0 && errno == EINTR);
  close (pfd.fd);
  if (rc == 0)
    return pgd_error (err, ETIMEDOUT, "image server %ld for %s did not exit", (long)pid, p->dd);
  if (rc < 0)
    return pgd_error (err, errno, "wait for image server %ld", (long)pid);
  return 0;
}

/* ---- spawning the server -------------------------------------------------------------- */

static void
free_list (char ***list)
{
  pgd_chain_free_list (*list);
}

/* The server gets a small environment of its own: PATH and our PGD_* settings, nothing
   of the caller's (a test harness's or a request's variables). */
static void
server_env (char **envp, size_t max)
{
  extern char **environ;
  size_t n = 0;

  for (char **e = environ; e && *e && n + 2 < max; e++)
    if (strncmp (*e, "PATH=", 5) == 0 || strncmp (*e, "PGD_", 4) == 0)
      envp[n++] = *e;
  if (n == 0 || strncmp (envp[0], "PATH=", 5) != 0)
    envp[n++] = (char *)"PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  envp[n] = NULL;
}

/* In the grandchild: only async-signal-safe calls until exec. */
static void __attribute__ ((noreturn))
exec_server (const char *exe, char **argv, char **envp, int devnull, int log_fd, int ready_fd)
{
  sigset_t all;
  int in = fcntl (devnull, F_DUPFD_CLOEXEC, 10);
  int out = fcntl (log_fd, F_DUPFD_CLOEXEC, 10);
  int rdy = fcntl (ready_fd, F_DUPFD_CLOEXEC, 10);

  if (in < 0 || out < 0 || rdy < 0 || dup2 (in, 0) < 0 || dup2 (out, 1) < 0 || dup2 (out, 2) < 0
      || dup2 (rdy, READY_FD) < 0)
    _exit (126);
  syscall (SYS_close_range, READY_FD + 1, ~0U, 0);
  sigemptyset (&all);
  sigprocmask (SIG_SETMASK, &all, NULL);
  if (chdir ("/") < 0)
    _exit (126);
  execve (exe, argv, envp);
  _exit (127);
}

/* Read the server's "READY PID" or "ERROR message" line from FD. */
static int
await_ready (int fd, const struct paths *p, pid_t *pid, struct pgd_err *err)
{
  char line[PGD_ERR_MSG_MAX];
  size_t used = 0;
  long v;

  for (;;)
    {
      struct pollfd pfd = { .fd = fd, .events = POLLIN };
      int rc = poll (&pfd, 1, SERVER_START_TIMEOUT_MS);
      if (rc < 0 && errno == EINTR)
        continue;
      if (rc == 0)
        return pgd_error (err, ETIMEDOUT, "image server for %s did not start", p->dd);
      ssize_t n = read (fd, line + used, sizeof line - 1 - used);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0 || (used += (size_t)n) >= sizeof line - 1 || memchr (line, '\n', used))
        break;
    }
  line[used] = '\0';
  line[strcspn (line, "\n")] = '\0';
  if (sscanf (line, "READY %ld", &v) == 1 && v > 0)
    {
      *pid = (pid_t)v;
      return 0;
    }
  if (strncmp (line, "ERROR ", 6) == 0)
    return pgd_error (err, EIO, "image server: %s", line + 6);
  return pgd_error (err, EIO, "image server for %s exited before it was ready (see %s)", p->dd,
                    p->log);
}

static int
spawn_server (const struct pgd_engine *e, const struct paths *p, bool ro, pid_t *pid,
              struct pgd_err *err)
{
  char threads[16], maxio[24], rfd[8];
  char *argv[24 + 2 * PGD_CHAIN_MAX_LEVELS], *envp[64];
  int n = 0, pfd[2], status;
  cleanup_close int log_fd = -1, devnull = -1, rd = -1;
  __attribute__ ((cleanup (free_list))) char **deltas = NULL;
  bool raw_base = false;
  pid_t child;

  /* the server is handed the chain (the image is ours meanwhile): it then needs no
     libploop, and the lean server binary starts several times faster */
  if (pgd_chain_list (p->dd, &deltas, &raw_base, err) < 0)
    return -1;
  snprintf (threads, sizeof threads, "%u", e->srv_threads);
  snprintf (maxio, sizeof maxio, "%u", e->srv_max_io);
  snprintf (rfd, sizeof rfd, "%d", READY_FD);
  if (e->srv_exe[0])
    argv[n++] = (char *)SERVER_BINARY;
  else
    {
      argv[n++] = (char *)"ploop-graphdriver";
      argv[n++] = (char *)"serve-image";
    }
  for (char **d = deltas; *d; d++)
    {
      argv[n++] = (char *)"--delta";
      argv[n++] = *d;
    }
  if (raw_base)
    argv[n++] = (char *)"--raw-base";
  argv[n++] = (char *)"--dd";
  argv[n++] = (char *)p->dd;
  argv[n++] = (char *)"--mountpoint";
  argv[n++] = (char *)p->fuse;
  argv[n++] = (char *)"--status";
  argv[n++] = (char *)p->status;
  argv[n++] = (char *)"--ready-fd";
  argv[n++] = rfd;
  argv[n++] = (char *)"--threads";
  argv[n++] = threads;
  argv[n++] = (char *)"--max-io";
  argv[n++] = maxio;
  if (ro)
    argv[n++] = (char *)"--ro";
  if (e->fuse_dio)
    argv[n++] = (char *)"--fuse-direct-io";
  if (!e->delta_dio)
    argv[n++] = (char *)"--buffered-io";
  argv[n] = NULL;
  server_env (envp, sizeof envp / sizeof *envp);

  if (unlink (p->status) < 0 && errno != ENOENT)
    return pgd_error (err, errno, "remove %s", p->status);
  log_fd = open (p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0)
    return pgd_error (err, errno, "open %s", p->log);
  struct stat st;
  if (fstat (log_fd, &st) == 0 && st.st_size > LOG_MAX && ftruncate (log_fd, 0) < 0)
    pgd_log (PGD_LOG_WARN, "truncate %s: %s", p->log, strerror (errno));
  devnull = open ("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0)
    return pgd_error (err, errno, "open /dev/null");
  if (pipe2 (pfd, O_CLOEXEC) < 0)
    return pgd_error (err, errno, "pipe");
  rd = pfd[0];
  child = fork ();
  if (child < 0)
    {
      close (pfd[1]);
      return pgd_error (err, errno, "fork image server");
    }
  if (child == 0)
    {
      /* own session, then orphaned: the server outlives the plugin process */
      setsid ();
      pid_t g = fork ();
      if (g != 0)
        _exit (g < 0 ? 1 : 0);
      exec_server (e->srv_exe[0] ? e->srv_exe : e->exe, argv, envp, devnull, log_fd, pfd[1]);
    }
  close (pfd[1]);
  while (waitpid (child, &status, 0) < 0)
    if (errno != EINTR)
      return pgd_error (err, errno, "wait for fork of image server");
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
    return pgd_error (err, ECHILD, "fork image server for %s", p->dd);
  return await_ready (rd, p, pid, err);
}

/* ---- teardown steps ------------------------------------------------------------------- */

static int
umount_retry (const char *path, unsigned timeout_ms, struct pgd_err *err)
{
  uint64_t deadline = pgd_now_ns () + (uint64_t)timeout_ms * 1000000ULL;
  unsigned nap = 1;

  while (umount2 (path, 0) < 0)
    {
      if (errno == EINVAL || errno == ENOENT)
        return 0; /* not mounted */
      if (errno != EBUSY || pgd_now_ns () >= deadline)
        return pgd_error (err, errno, "umount %s", path);
      sleep_ms (nap);
      if (nap < 64)
        nap *= 2;
    }
  return 0;
}

/* Unmount the server's FUSE mount: the server then flushes, closes and exits. */
static int
stop_fuse (const struct paths *p, struct pgd_err *err)
{
  if (!pgd_is_mountpoint (p->fuse))
    return 0;
  if (umount_retry (p->fuse, FUSE_UMOUNT_TIMEOUT_MS, err) == 0)
    return 0;
  char *argv[] = { (char *)"fusermount3", (char *)"-u", (char *)p->fuse, NULL };
  struct pgd_err e2;
  if (pgd_run (argv, &e2) == 0)
    return 0;
  return -1;
}

/* Detach whatever loop device still serves our disk file. */
static int
release_loop (const struct paths *p, struct pgd_err *err)
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

/* Did the server close the image cleanly? Reads the status it left. */
static int
server_result (const struct paths *p, bool had_server, struct pgd_err *err)
{
  cleanup_free char *status = NULL;

  if (pgd_read_file (p->status, &status, NULL, NULL) < 0)
    return had_server ? pgd_error (err, EIO,
                                   "image server for %s died without closing the "
                                   "image (it will be checked at the next mount)",
                                   p->dd)
                      : 0;
  status[strcspn (status, "\n")] = '\0';
  if (strcmp (status, "clean") != 0)
    return pgd_error (err, EIO, "image server for %s: %s", p->dd, status);
  return 0;
}

static void
forget_state (const struct paths *p)
{
  unlink (p->pid);
  unlink (p->status);
  rmdir (p->fuse);
}

/* Stop the server of P (FUSE unmount, wait for its exit) and check how it ended. */
static int
stop_server (const struct paths *p, struct pgd_err *err)
{
  bool had_server = access (p->pid, F_OK) == 0;

  if (stop_fuse (p, err) < 0 || wait_server_exit (p, err) < 0)
    return -1;
  int rc = server_result (p, had_server, err);
  forget_state (p);
  return rc;
}

/* ---- user engine ---------------------------------------------------------------------- */

/* A top left in use means its server died: repair it while nobody serves it. */
static int
repair_if_needed (const char *image_dir, const struct paths *p, struct pgd_err *err)
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

static int
mkfs_ext4 (const char *dev, struct pgd_err *err)
{
  char *argv[] = {
    (char *)"mkfs.ext4",        (char *)"-q", (char *)"-F", (char *)"-m", (char *)"0", (char *)"-E",
    (char *)MKFS_EXT4_EXTENDED, (char *)dev,  NULL
  };
  return pgd_run (argv, err);
}

/* Offline grow of a cleanly unmounted ext4 to the size of DEV. -f: resize2fs would
   otherwise want a fresh e2fsck -f first; the filesystem was closed cleanly by us. */
static int
resize_ext4 (const char *dev, struct pgd_err *err)
{
  char *argv[] = { (char *)"resize2fs", (char *)"-f", (char *)dev, NULL };
  return pgd_run (argv, err);
}

static int
mount_ext4 (const char *dev, const char *target, bool ro, const char *opts, struct pgd_err *err)
{
  char data[PATH_MAX];

  snprintf (data, sizeof data, "%s%s%s", ro ? RO_MOUNT_DATA : RW_MOUNT_DATA,
            opts && *opts ? "," : "", opts && *opts ? opts : "");
  if (mount (dev, target, "ext4", ro ? MS_RDONLY : RW_MOUNT_FLAGS, data) < 0)
    return pgd_error (err, errno, "mount %s on %s (%s)", dev, target, data);
  return 0;
}

static int
mount_user (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
            const char *target, unsigned flags, const char *opts, struct pgd_err *err)
{
  bool ro = flags & PGD_MOUNT_RO;
  uint64_t t0 = pgd_now_ns ();
  unsigned t_srv, t_loop, t_mkfs = 0;
  struct paths p;
  char dev[64];
  int nr = -1, loop_fd = -1, file_fd = -1;
  pid_t pid = 0;

  if (pgd_mkdir_p (run_dir, 0700, err) < 0 || make_paths (&p, image_dir, run_dir, err) < 0)
    return -1;
  if (mkdir (p.fuse, 0700) < 0 && errno != EEXIST)
    return pgd_error (err, errno, "mkdir %s", p.fuse);
  if (pgd_is_mountpoint (target))
    return pgd_error (err, EBUSY, "%s is already mounted", target);
  if (pgd_is_mountpoint (p.fuse))
    {
      if (server_alive (&p))
        return pgd_error (err, EBUSY, "image %s is already served at %s", image_dir, p.fuse);
      /* left by a server that died */
      if (umount2 (p.fuse, MNT_DETACH) < 0)
        return pgd_error (err, errno, "umount stale %s", p.fuse);
    }
  if (repair_if_needed (image_dir, &p, err) < 0)
    return -1;

  if (spawn_server (e, &p, ro, &pid, err) < 0)
    goto undo;
  if (write_pid_file (&p, pid, err) < 0)
    goto undo;
  t_srv = elapsed_ms (t0);
  file_fd = open (p.disk, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (file_fd < 0)
    {
      pgd_error (err, errno, "open %s", p.disk);
      goto undo;
    }
  if (pgd_loop_attach (file_fd, (ro ? PGD_LOOP_RO : 0) | (e->loop_dio ? PGD_LOOP_DIO : 0), &nr,
                       &loop_fd, err)
      < 0)
    goto undo;
  close (file_fd);
  file_fd = -1;
  pgd_loop_path (nr, dev, sizeof dev);
  t_loop = elapsed_ms (t0);
  if (flags & PGD_MOUNT_MKFS)
    {
      if (ro)
        {
          pgd_error (err, EINVAL, "mkfs on a read-only mount");
          goto undo;
        }
      if (mkfs_ext4 (dev, err) < 0)
        goto undo;
      t_mkfs = elapsed_ms (t0);
    }
  else if (flags & PGD_MOUNT_RESIZE)
    {
      if (ro)
        {
          pgd_error (err, EINVAL, "resize on a read-only mount");
          goto undo;
        }
      if (resize_ext4 (dev, err) < 0)
        goto undo;
    }
  if (mount_ext4 (dev, target, ro, opts, err) < 0)
    goto undo;
  /* the mount holds the device now; our close leaves autoclear to the umount */
  close (loop_fd);
  pgd_log (PGD_LOG_DEBUG,
           "mounted %s at %s via %s (ms since start: server ready %u, loop %u, "
           "mkfs %u, mounted %u)",
           image_dir, target, dev, t_srv, t_loop, t_mkfs, elapsed_ms (t0));
  return 0;

undo:
  pgd_error_wrap (err, "mount image %s", image_dir);
  if (file_fd >= 0)
    close (file_fd);
  if (loop_fd >= 0)
    close (loop_fd);
  {
    struct pgd_err e2 = { 0 };
    if (release_loop (&p, &e2) < 0 || stop_server (&p, &e2) < 0)
      pgd_log (PGD_LOG_ERROR, "undo mount of %s: %s", image_dir, e2.msg);
  }
  return -1;
}

static int
umount_user (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
             const char *target, struct pgd_err *err)
{
  uint64_t t0 = pgd_now_ns ();
  struct paths p;
  struct stat st;

  (void)e;
  if (pgd_is_mountpoint (target) && umount_retry (target, TARGET_UMOUNT_TIMEOUT_MS, err) < 0)
    return pgd_error_wrap (err, "unmount image %s", image_dir);
  if (stat (run_dir, &st) < 0 && errno == ENOENT)
    return 0; /* never mounted by this engine */
  unsigned t_fs = elapsed_ms (t0), t_loop;
  if (make_paths (&p, image_dir, run_dir, err) < 0 || release_loop (&p, err) < 0)
    return pgd_error_wrap (err, "unmount image %s", image_dir);
  t_loop = elapsed_ms (t0);
  if (stop_server (&p, err) < 0)
    return pgd_error_wrap (err, "unmount image %s", image_dir);
  pgd_log (PGD_LOG_DEBUG, "unmounted %s from %s (ms since start: ext4 %u, loop %u, server %u)",
           image_dir, target, t_fs, t_loop, elapsed_ms (t0));
  return 0;
}

/* ---- kernel engine (needs the ploop module; not runnable on these hosts) ---------------- */

static int
read_di (const char *image_dir, struct ploop_disk_images_data **di, struct pgd_err *err)
{
  cleanup_free char *dd = calloc (1, 2 * PATH_MAX); /* PLOOP.md §5.4 pitfall 1 */

  if (dd == NULL)
    return pgd_error (err, ENOMEM, "read %s", image_dir);
  snprintf (dd, PATH_MAX, "%s/%s", image_dir, PGD_IMAGE_DD);
  ploop_set_verbose_level (PLOOP_LOG_NOSTDOUT);
  int rc = ploop_read_disk_descr (di, dd);
  if (rc != 0)
    return pgd_error (err, EIO, "read %s: %s (rc %d)", dd, ploop_get_last_error (), rc);
  return 0;
}

static int
mount_kernel (const char *image_dir, const char *target, unsigned flags, const char *opts,
              struct pgd_err *err)
{
  struct ploop_disk_images_data *di = NULL;
  struct ploop_mount_param mp;
  cleanup_free char *tgt = calloc (1, 2 * PATH_MAX);
  char data[PATH_MAX];
  int rc;

  if (tgt == NULL)
    return pgd_error (err, ENOMEM, "mount %s", image_dir);
  /* libploop's mount checks every delta and calls a thin one sparse (rc 11) */
  uint64_t filled;
  if (pgd_image_allocate (image_dir, &filled, err) < 0)
    return pgd_error_wrap (err, "mount %s", image_dir);
  if (read_di (image_dir, &di, err) < 0)
    return -1;
  memset (&mp, 0, sizeof mp);
  mp.ro = (flags & PGD_MOUNT_RO) ? 1 : 0;
  mp.fstype = (char *)"ext4";
  snprintf (data, sizeof data, "%s", opts ? opts : "");
  mp.mount_data = data[0] ? data : NULL;
  snprintf (tgt, PATH_MAX, "%s", target);
  /* with mkfs or resize: device only first (whole-device ext4, PLOOP.md §5.4 pitfall 5) */
  bool prep = flags & (PGD_MOUNT_MKFS | PGD_MOUNT_RESIZE);
  mp.target = prep ? NULL : tgt;
  rc = ploop_mount_image (di, &mp);
  if (rc != 0)
    {
      pgd_error (err, EIO, "ploop mount %s: %s (rc %d)", image_dir, ploop_get_last_error (), rc);
      ploop_free_diskdescriptor (di);
      return -1;
    }
  if (prep
      && (((flags & PGD_MOUNT_MKFS) ? mkfs_ext4 (mp.device, err) : resize_ext4 (mp.device, err)) < 0
          || mount_ext4 (mp.device, target, mp.ro, opts, err) < 0))
    {
      ploop_umount_image (di);
      ploop_free_diskdescriptor (di);
      return pgd_error_wrap (err, "mount image %s", image_dir);
    }
  ploop_free_diskdescriptor (di);
  return 0;
}

static int
umount_kernel (const char *image_dir, const char *target, struct pgd_err *err)
{
  struct ploop_disk_images_data *di = NULL;
  int rc;

  if (pgd_is_mountpoint (target) && umount_retry (target, TARGET_UMOUNT_TIMEOUT_MS, err) < 0)
    return pgd_error_wrap (err, "unmount image %s", image_dir);
  if (read_di (image_dir, &di, err) < 0)
    return -1;
  rc = ploop_is_mounted (di) ? ploop_umount_image (di) : 0;
  ploop_free_diskdescriptor (di);
  if (rc != 0)
    return pgd_error (err, EIO, "ploop umount %s: %s (rc %d)", image_dir, ploop_get_last_error (),
                      rc);
  return 0;
}

/* ---- API ------------------------------------------------------------------------------- */

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
  return 0;
}

int
pgd_engine_mount (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                  const char *target, unsigned flags, const char *mount_opts, struct pgd_err *err)
{
  if (e->kind == PGD_ENGINE_KERNEL)
    return mount_kernel (image_dir, target, flags, mount_opts, err);
  return mount_user (e, image_dir, run_dir, target, flags, mount_opts, err);
}

int
pgd_engine_umount (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                   const char *target, struct pgd_err *err)
{
  if (e->kind == PGD_ENGINE_KERNEL)
    return umount_kernel (image_dir, target, err);
  return umount_user (e, image_dir, run_dir, target, err);
}

bool
pgd_engine_is_mounted (const struct pgd_engine *e, const char *image_dir, const char *run_dir,
                       const char *target)
{
  struct paths p;

  if (!pgd_is_mountpoint (target))
    return false;
  if (e->kind == PGD_ENGINE_KERNEL)
    return true;
  return make_paths (&p, image_dir, run_dir, NULL) == 0 && pgd_is_mountpoint (p.fuse)
         && server_alive (&p);
}
