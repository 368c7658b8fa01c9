/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Stop signals of the server binaries (signals.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "signals.h"

/* The write end of the self-pipe: the only thing the signal handler touches. */
static int signal_pipe_w = -1;

static void
on_stop_signal (int signo)
{
  int saved = errno;
  unsigned char b = (unsigned char)signo;

  if (write (signal_pipe_w, &b, 1) < 0)
    {
      /* the pipe is full: a stop is already pending */
    }
  errno = saved;
}

static void
on_sigpipe (int signo)
{
  (void)signo;
}

int
pgd_stop_signals_install (int *read_fd, struct pgd_err *err)
{
  struct sigaction sa = { 0 };
  int fds[2];

  if (pipe2 (fds, O_CLOEXEC) < 0)
    return pgd_error (err, errno, "signal pipe");
  if (fcntl (fds[1], F_SETFL, O_NONBLOCK) < 0)
    return pgd_error (err, errno, "signal pipe");
  signal_pipe_w = fds[1];
  *read_fd = fds[0];
  sigemptyset (&sa.sa_mask);
#ifdef __SANITIZE_THREAD__
  /* TSan runs a handler only once the thread leaves its blocking call, which a
     restarted read never does (make tsan): let pgd_stop_signals_wait see EINTR */
  sa.sa_flags = 0;
#else
  sa.sa_flags = SA_RESTART;
#endif
  sa.sa_handler = on_stop_signal;
  if (sigaction (SIGTERM, &sa, NULL) < 0 || sigaction (SIGINT, &sa, NULL) < 0)
    return pgd_error (err, errno, "sigaction");
  sa.sa_handler = on_sigpipe;
  if (sigaction (SIGPIPE, &sa, NULL) < 0)
    return pgd_error (err, errno, "sigaction SIGPIPE");
  return 0;
}

int
pgd_stop_signals_wait (int read_fd)
{
  unsigned char b = 0;

  for (;;)
    {
      ssize_t n = read (read_fd, &b, 1);
      if (n == 1)
        return b;
      if (n < 0 && errno == EINTR)
        continue;
      pgd_log (PGD_LOG_ERROR, "signal pipe: %s", n < 0 ? strerror (errno) : "closed");
      return SIGTERM;
    }
}
