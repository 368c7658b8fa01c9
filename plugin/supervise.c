/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The managed plugin's image servers live in the plugin's container: when its PID 1
   dies, the kernel kills everything in it, and every running container loses its
   filesystem. So PID 1 does nothing that can crash: it starts the plugin (the HTTP
   server and the store) as a child, restarts it when it dies (a crash, an abort, an
   assertion, kill -9), reaps the image servers it orphans (they keep serving; the next
   child adopts their mounts as after a restart of the legacy plugin), and hands stop
   signals on. It is also a child subreaper, so the same holds when it is not PID 1. */
#include "supervise.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define RESTART_MIN_MS 500U    /* first wait before a restart */
#define RESTART_MAX_MS 30000U  /* waits double after quick deaths, up to this */
#define STABLE_RUN_MS 60000ULL /* a child that ran this long resets the wait */

static pid_t
start_child (char **argv, const sigset_t *old)
{
  pid_t pid = fork ();

  if (pid != 0)
    return pid;
  sigprocmask (SIG_SETMASK, old, NULL);
  if (getenv ("LISTEN_FDS"))
    {
      /* socket activation: the passed socket is the child's now */
      char buf[32];
      snprintf (buf, sizeof buf, "%d", (int)getpid ());
      setenv ("LISTEN_PID", buf, 1);
    }
  execv ("/proc/self/exe", argv);
  fprintf (stderr, "supervise: exec %s: %s\n", argv[0], strerror (errno));
  _exit (127);
}

int
pgd_supervise (int argc, char **argv)
{
  cleanup_free char **child_argv = calloc ((size_t)argc + 1, sizeof *child_argv);
  sigset_t mask, old;
  unsigned wait_ms = RESTART_MIN_MS;
  bool stopping = false;
  int status = 0, n = 0;

  if (child_argv == NULL)
    return EXIT_FAILURE;
  for (int i = 0; i < argc; i++)
    if (strcmp (argv[i], "--supervise") != 0)
      child_argv[n++] = argv[i];
  if (prctl (PR_SET_CHILD_SUBREAPER, 1) < 0)
    pgd_log (PGD_LOG_WARN, "supervise: subreaper: %s", strerror (errno));
  sigemptyset (&mask);
  sigaddset (&mask, SIGCHLD);
  sigaddset (&mask, SIGTERM);
  sigaddset (&mask, SIGINT);
  sigprocmask (SIG_BLOCK, &mask, &old);

  uint64_t started = pgd_now_ns ();
  pid_t child = start_child (child_argv, &old);
  if (child < 0)
    {
      pgd_log (PGD_LOG_ERROR, "supervise: fork: %s", strerror (errno));
      return EXIT_FAILURE;
    }
  pgd_log (PGD_LOG_INFO, "supervise: plugin started (pid %d)", (int)child);
  for (;;)
    {
      siginfo_t si;
      struct timespec ts
          = { .tv_sec = wait_ms / 1000, .tv_nsec = (long)(wait_ms % 1000) * 1000000L };
      int sig = child > 0 ? sigwaitinfo (&mask, &si) : sigtimedwait (&mask, &si, &ts);
      if (sig < 0 && errno == EAGAIN && child <= 0)
        {
          /* the wait after a death is over: start again */
          started = pgd_now_ns ();
          child = start_child (child_argv, &old);
          pgd_log (PGD_LOG_WARN, "supervise: plugin restarted (pid %d)", (int)child);
          continue;
        }
      if (sig == SIGTERM || sig == SIGINT)
        {
          stopping = true;
          if (child > 0)
            kill (child, sig);
          else
            return EXIT_SUCCESS;
          continue;
        }
      if (sig != SIGCHLD)
        continue;
      pid_t pid;
      int st;
      while ((pid = waitpid (-1, &st, WNOHANG)) > 0)
        {
          if (pid != child)
            continue; /* an orphaned image server or helper */
          status = st;
          child = 0;
          if (stopping)
            return WIFEXITED (st) ? WEXITSTATUS (st) : EXIT_FAILURE;
          uint64_t ran_ms = (pgd_now_ns () - started) / 1000000ULL;
          wait_ms = ran_ms >= STABLE_RUN_MS        ? RESTART_MIN_MS
                    : wait_ms * 2 > RESTART_MAX_MS ? RESTART_MAX_MS
                                                   : wait_ms * 2;
          if (WIFSIGNALED (st))
            pgd_log (PGD_LOG_ERROR, "supervise: plugin killed by signal %d; restarting in %u ms",
                     WTERMSIG (st), wait_ms);
          else
            pgd_log (PGD_LOG_ERROR, "supervise: plugin exited with %d; restarting in %u ms",
                     WEXITSTATUS (st), wait_ms);
        }
    }
  (void)status;
}
