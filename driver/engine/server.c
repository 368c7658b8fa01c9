/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Image-server processes of the user engine: their identity (pid file with start
   time), spawning one and waiting for it to be ready, stopping one and reading how it
   closed the image. */
#include "engine_priv.h"

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

#include "chain.h"
#include "image.h"
#include "log.h"
#include "util.h"
#include "watchdog.h"

/* RUN_DIR must exist; it is resolved so that paths match what sysfs shows. */
int
pgd_srv_paths (struct pgd_srv_paths *p, const char *image_dir, const char *run_dir,
               struct pgd_err *err)
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

int
pgd_srv_record (const struct pgd_srv_paths *p, pid_t pid, struct pgd_err *err)
{
  char line[64];
  int n = snprintf (line, sizeof line, "%ld %llu\n", (long)pid, pgd_proc_starttime (pid));
  return pgd_write_file_atomic (p->pid, line, (size_t)n, err);
}

bool
pgd_srv_read (const struct pgd_srv_paths *p, pid_t *pid, unsigned long long *start)
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

bool
pgd_srv_alive (const struct pgd_srv_paths *p)
{
  unsigned long long start;
  pid_t pid;

  return pgd_srv_read (p, &pid, &start) && start != 0 && pgd_proc_starttime (pid) == start;
}

/* Wait until the server recorded in the pid file has exited. */
static int
wait_server_exit (const struct pgd_srv_paths *p, struct pgd_err *err)
{
  unsigned long long start;
  struct pollfd pfd;
  pid_t pid;
  int rc;

  if (!pgd_srv_read (p, &pid, &start))
    return 0;
  pfd.fd = (int)syscall (SYS_pidfd_open, pid, 0);
  if (pfd.fd < 0)
    return errno == ESRCH ? 0 : pgd_error (err, errno, "pidfd of server %ld", (long)pid);
  /* the pidfd pins the process: check it is still ours */
  if (pgd_proc_starttime (pid) != start)
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
await_ready (int fd, const struct pgd_srv_paths *p, pid_t *pid, struct pgd_err *err)
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

int
pgd_srv_spawn (const struct pgd_engine *e, const struct pgd_srv_paths *p, bool ro, pid_t *pid,
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

/* Unmount the server's FUSE mount: the server then flushes, closes and exits. */
static int
stop_fuse (const struct pgd_srv_paths *p, struct pgd_err *err)
{
  if (!pgd_is_mountpoint (p->fuse))
    return 0;
  if (pgd_umount_retry (p->fuse, FUSE_UMOUNT_TIMEOUT_MS, err) == 0)
    return 0;
  char *argv[] = { (char *)"fusermount3", (char *)"-u", (char *)p->fuse, NULL };
  struct pgd_err e2;
  if (pgd_run (argv, &e2) == 0)
    return 0;
  return -1;
}

/* Did the server close the image cleanly? Reads the status it left. */
static int
server_result (const struct pgd_srv_paths *p, bool had_server, struct pgd_err *err)
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
forget_state (const struct pgd_srv_paths *p)
{
  unlink (p->pid);
  unlink (p->status);
  rmdir (p->fuse);
}

/* Stop the server of P (FUSE unmount, wait for its exit) and check how it ended. */
int
pgd_srv_stop (const struct pgd_srv_paths *p, struct pgd_err *err)
{
  bool had_server = access (p->pid, F_OK) == 0;

  if (stop_fuse (p, err) < 0 || wait_server_exit (p, err) < 0)
    return -1;
  int rc = server_result (p, had_server, err);
  forget_state (p);
  return rc;
}
