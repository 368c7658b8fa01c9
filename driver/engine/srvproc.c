/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The image server's process setup: what keeps it alive and resident while the kernel
   waits on its device (PLOOP.md §6.4). Split from imgsrv.c. */
#include "srvproc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "log.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

/* Room left under RLIMIT_MEMLOCK for what the server allocates once locked (libfuse's
   request objects, mostly recycled by malloc) */
#define MLOCK_HEADROOM (4ull << 20)
#define OOM_SCORE_ADJ "-900" /* killing the server breaks a container's filesystem */

void
pgd_srvproc_harden (void)
{
  int fd;

  /* Our allocations must not recurse into I/O reclaim that waits on our own device,
     and we must not be throttled for dirty pages only we can clean (PLOOP.md §6.4). */
  if (prctl (PR_SET_IO_FLUSHER, 1, 0, 0, 0) < 0)
    pgd_log (PGD_LOG_WARN, "prctl PR_SET_IO_FLUSHER: %s", strerror (errno));
  fd = open ("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (fd >= 0)
    {
      if (write (fd, OOM_SCORE_ADJ, strlen (OOM_SCORE_ADJ)) < 0)
        pgd_log (PGD_LOG_WARN, "oom_score_adj: %s", strerror (errno));
      close (fd);
    }
}

/* Bytes of address space the process maps now (VmSize), 0 if unknown. */
static unsigned long long
mapped_bytes (void)
{
  char line[128];
  unsigned long long kb = 0;
  FILE *f = fopen ("/proc/self/status", "re");
  while (f && fgets (line, sizeof line, f))
    if (sscanf (line, "VmSize: %llu kB", &kb) == 1)
      break;
  if (f)
    fclose (f);
  return kb * 1024;
}

/* Keep the server resident once it is set up (maps, worker buffers and stacks exist
   by then): its pages must not be reclaimed while the kernel waits on its device.
   Locking is all or nothing: when RLIMIT_MEMLOCK leaves no room for what is mapped
   plus MLOCK_HEADROOM of later allocations (a container's small default), every
   allocation after mlockall would fail with EAGAIN, so the server stays unlocked. */
void
pgd_srvproc_lock_memory (bool enabled)
{
  struct rlimit rl;
  unsigned long long need = mapped_bytes () + MLOCK_HEADROOM;

  if (!enabled)
    return;
  if (getrlimit (RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
    {
      /* up to the hard limit anyone may; past it needs CAP_SYS_RESOURCE */
      struct rlimit raise = { .rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max };
      if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
        raise.rlim_cur = raise.rlim_max = RLIM_INFINITY;
      if (setrlimit (RLIMIT_MEMLOCK, &raise) < 0)
        {
          pgd_log (PGD_LOG_WARN,
                   "RLIMIT_MEMLOCK is %llu bytes, %llu needed: the server is not locked in "
                   "memory",
                   (unsigned long long)rl.rlim_cur, need);
          return;
        }
    }
  /* MCL_ONFAULT: pages stay resident once used, untouched library pages and buffer
     tails are not pulled in */
  if (mlockall (MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) < 0)
    {
      pgd_log (PGD_LOG_WARN, "mlockall: %s", strerror (errno));
      munlockall ();
    }
}

void
pgd_srvproc_ignore_signals (void)
{
  struct sigaction sa;

  /* The server stops when its FUSE mount goes away, never on a terminal's or a
     service manager's signal: that would pull the disk from under a mounted ext4. */
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigaction (SIGPIPE, &sa, NULL);
  sigaction (SIGHUP, &sa, NULL);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
}
