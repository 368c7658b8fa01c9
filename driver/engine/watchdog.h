/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Private to the user engine: a bound on the steps that wait on an image server. */
#ifndef PGD_WATCHDOG_H
#define PGD_WATCHDOG_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

/* One watched step: a thread samples the server's progress while the step runs. */
struct pgd_watch
{
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond; /* CLOCK_MONOTONIC */
  bool running;        /* the thread was started */
  bool done;           /* the step ended */
  bool fired;          /* the server was declared dead */
  pid_t pid;
  unsigned long long start; /* the server's start time, so a reused pid is never hit */
  unsigned stall_ms;
  char fuse[PATH_MAX]; /* its FUSE mount point */
  char what[PATH_MAX]; /* what it serves, for the log */
};

/* Start watching server PID (start time START, FUSE mount FUSE) during a step that needs
   it: when the server makes no progress (CPU time, bytes read and written) for STALL_MS,
   it is declared dead: its FUSE connection is aborted, so the kernel fails what waits on
   it, and it is killed. STALL_MS 0 or no PID: no watch. */
void pgd_watch_start (struct pgd_watch *w, pid_t pid, unsigned long long start, const char *fuse,
                      const char *what, unsigned stall_ms);

/* End the watch started by pgd_watch_start; true when it declared the server dead. */
bool pgd_watch_end (struct pgd_watch *w);

/* Start time of PID in clock ticks since boot (field 22 of /proc/PID/stat); 0 if gone
   or exited (a zombie). */
unsigned long long pgd_proc_starttime (pid_t pid);

/* True when PID is stopped (SIGSTOP, state T): it answers nothing until continued. */
bool pgd_proc_stopped (pid_t pid);

#endif
