/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Every wait on an image server is bounded. A server that is stopped (SIGSTOP), stuck or
   deadlocked would make the kernel wait on its FUSE requests forever, and with it the
   unmount, the loop device's flush and the request that asked for them. While such a
   step runs, a watch thread samples the server's progress; after the stall limit with
   none, the server is declared dead: its FUSE connection is aborted through
   /sys/fs/fuse/connections/N/abort (the kernel fails the waiting requests) and it is
   killed. The step then fails or ends as after a crash of the server, which the engine
   already handles (the image is checked at its next mount). */
#include "watchdog.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define FUSE_CONNECTIONS "/sys/fs/fuse/connections"
#define SAMPLE_MAX_MS 1000U /* progress is sampled at least this often */

unsigned long long
pgd_proc_starttime (pid_t pid)
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

bool
pgd_proc_stopped (pid_t pid)
{
  char path[64];
  cleanup_free char *data = NULL;

  snprintf (path, sizeof path, "/proc/%ld/stat", (long)pid);
  if (pgd_read_file (path, &data, NULL, NULL) < 0)
    return false;
  char *p = strrchr (data, ')');
  return p && p[1] == ' ' && p[2] == 'T';
}

/* What PID has done so far: CPU ticks plus bytes read and written; 0 when gone. */
static unsigned long long
progress (pid_t pid)
{
  char path[64];
  cleanup_free char *stat = NULL, *io = NULL;
  unsigned long long ut = 0, stt = 0, rchar = 0, wchar = 0;

  snprintf (path, sizeof path, "/proc/%ld/stat", (long)pid);
  if (pgd_read_file (path, &stat, NULL, NULL) < 0)
    return 0;
  char *p = strrchr (stat, ')');
  for (int field = 2; field < 13 && p; field++)
    p = strchr (p + 1, ' ');
  if (p)
    sscanf (p, " %llu %llu", &ut, &stt);
  snprintf (path, sizeof path, "/proc/%ld/io", (long)pid);
  if (pgd_read_file (path, &io, NULL, NULL) == 0)
    {
      char *r = strstr (io, "rchar:"), *w = strstr (io, "wchar:");
      if (r)
        sscanf (r + 6, "%llu", &rchar);
      if (w)
        sscanf (w + 6, "%llu", &wchar);
    }
  return ut + stt + rchar + wchar + 1;
}

/* The FUSE connection number of the mount at FUSE (its device minor), or -1. */
static long
fuse_connection (const char *fuse)
{
  cleanup_fclose FILE *f = fopen ("/proc/self/mountinfo", "re");
  cleanup_free char *line = NULL;
  size_t cap = 0;
  long conn = -1;

  while (f && getline (&line, &cap, f) > 0)
    {
      unsigned maj, min;
      char *save = NULL;
      if (sscanf (line, "%*d %*d %u:%u", &maj, &min) != 2)
        continue;
      char *point = pgd_mountinfo_point (line, &save);
      if (point && strcmp (point, fuse) == 0)
        conn = (long)min; /* the last (topmost) one wins */
    }
  return conn;
}

/* Abort W's FUSE connection, then kill its server (if still the same process). */
static void
declare_dead (struct pgd_watch *w)
{
  long conn = fuse_connection (w->fuse);
  char path[128], what[64] = "no FUSE connection left";

  if (conn >= 0)
    {
      snprintf (path, sizeof path, FUSE_CONNECTIONS "/%ld/abort", conn);
      /* fusectl is not always mounted (it is by systemd): mount it when missing */
      if (access (path, F_OK) < 0 && errno == ENOENT
          && mount ("fusectl", FUSE_CONNECTIONS, "fusectl", 0, NULL) < 0)
        pgd_log (PGD_LOG_WARN, "mount fusectl on " FUSE_CONNECTIONS ": %s", strerror (errno));
      int fd = open (path, O_WRONLY | O_CLOEXEC);
      if (fd >= 0 && write (fd, "1", 1) == 1)
        snprintf (what, sizeof what, "FUSE connection %ld aborted", conn);
      else
        snprintf (what, sizeof what, "abort of FUSE connection %ld failed: %s", conn,
                  strerror (errno));
      if (fd >= 0)
        close (fd);
    }
  int pidfd = (int)syscall (SYS_pidfd_open, w->pid, 0);
  /* the pidfd pins the process: it is ours only if its start time still matches */
  if (pidfd >= 0 && pgd_proc_starttime (w->pid) == w->start)
    syscall (SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
  if (pidfd >= 0)
    close (pidfd);
  pgd_log (PGD_LOG_ERROR,
           "image server %ld for %s made no progress for %u ms: declared dead (%s, killed); "
           "the image is checked at its next mount",
           (long)w->pid, w->what, w->stall_ms, what);
}

static void *
watch_main (void *arg)
{
  struct pgd_watch *w = arg;
  unsigned step = w->stall_ms / 4 ? w->stall_ms / 4 : 1;
  unsigned long long last = progress (w->pid);
  uint64_t last_change = pgd_now_ns ();

  if (step > SAMPLE_MAX_MS)
    step = SAMPLE_MAX_MS;
  PGD_SCOPED_LOCK (&w->lock);
  while (!w->done)
    {
      struct timespec ts = pgd_timespec_at (pgd_now_ns () + (uint64_t)step * 1000000ULL);
      pthread_cond_timedwait (&w->cond, &w->lock, &ts);
      if (w->done)
        break;
      unsigned long long now = progress (w->pid);
      if (now == 0)
        break; /* gone: the kernel fails what waited on it */
      if (now != last)
        {
          last = now;
          last_change = pgd_now_ns ();
          continue;
        }
      if (pgd_now_ns () - last_change >= (uint64_t)w->stall_ms * 1000000ULL)
        {
          declare_dead (w);
          w->fired = true;
          break;
        }
    }
  return NULL;
}

void
pgd_watch_start (struct pgd_watch *w, pid_t pid, unsigned long long start, const char *fuse,
                 const char *what, unsigned stall_ms)
{
  pthread_condattr_t ca;

  memset (w, 0, sizeof *w);
  if (stall_ms == 0 || pid <= 0)
    return;
  w->pid = pid;
  w->start = start;
  w->stall_ms = stall_ms;
  snprintf (w->fuse, sizeof w->fuse, "%s", fuse);
  snprintf (w->what, sizeof w->what, "%s", what);
  pthread_mutex_init (&w->lock, NULL);
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&w->cond, &ca);
  pthread_condattr_destroy (&ca);
  int rc = pthread_create (&w->thread, NULL, watch_main, w);
  if (rc != 0)
    pgd_log (PGD_LOG_WARN, "watch of image server %ld: %s; its wait is not bounded", (long)pid,
             strerror (rc));
  w->running = rc == 0;
}

bool
pgd_watch_end (struct pgd_watch *w)
{
  if (!w->running)
    return false;
  pthread_mutex_lock (&w->lock);
  w->done = true;
  pthread_cond_broadcast (&w->cond);
  pthread_mutex_unlock (&w->lock);
  pthread_join (w->thread, NULL);
  pthread_mutex_destroy (&w->lock);
  pthread_cond_destroy (&w->cond);
  w->running = false;
  return w->fired;
}
