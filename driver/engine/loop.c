/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "loop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/loop.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define ATTACH_TRIES 16   /* another process may take the free device first */
#define NODE_WAIT_MS 2000 /* for devtmpfs to show a new /dev/loopN */

void
pgd_loop_path (int nr, char *buf, size_t len)
{
  snprintf (buf, len, "/dev/loop%d", nr);
}

static int
open_node (int nr, bool ro, struct pgd_err *err)
{
  char path[64];
  int fd;

  pgd_loop_path (nr, path, sizeof path);
  for (unsigned waited = 0;; waited++)
    {
      fd = open (path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
      if (fd >= 0 || errno != ENOENT || waited >= NODE_WAIT_MS)
        break;
      pgd_sleep_ms (1);
    }
  if (fd < 0)
    return pgd_error (err, errno, "open %s", path);
  return fd;
}

int
pgd_loop_attach (int file_fd, unsigned flags, int *nr, int *dev_fd, struct pgd_err *err)
{
  cleanup_close int ctl = open ("/dev/loop-control", O_RDWR | O_CLOEXEC);
  struct loop_config cfg;

  if (ctl < 0)
    return pgd_error (err, errno, "open /dev/loop-control");
  memset (&cfg, 0, sizeof cfg);
  cfg.fd = (unsigned)file_fd;
  cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
  if (flags & PGD_LOOP_RO)
    cfg.info.lo_flags |= LO_FLAGS_READ_ONLY;
  if (flags & PGD_LOOP_DIO)
    cfg.info.lo_flags |= LO_FLAGS_DIRECT_IO;
  for (int tries = 0;; tries++)
    {
      int n = ioctl (ctl, LOOP_CTL_GET_FREE);
      if (n < 0)
        return pgd_error (err, errno, "find a free loop device");
      int fd = open_node (n, flags & PGD_LOOP_RO, err);
      if (fd < 0)
        return -1;
      if (ioctl (fd, LOOP_CONFIGURE, &cfg) == 0)
        {
          *nr = n;
          *dev_fd = fd;
          return 0;
        }
      int e = errno;
      close (fd);
      if (e != EBUSY || tries + 1 >= ATTACH_TRIES)
        return pgd_error (err, e, "configure /dev/loop%d", n);
    }
}

bool
pgd_loop_backing (int nr, char *buf, size_t len)
{
  char path[128];
  cleanup_close int fd = -1;
  ssize_t n;

  snprintf (path, sizeof path, "/sys/block/loop%d/loop/backing_file", nr);
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || len == 0)
    return false;
  n = read (fd, buf, len - 1);
  if (n <= 0)
    return false;
  buf[n] = '\0';
  buf[strcspn (buf, "\n")] = '\0';
  return true;
}

bool
pgd_loop_bound_to (int nr, const char *backing)
{
  char cur[PATH_MAX];
  return pgd_loop_backing (nr, cur, sizeof cur) && strcmp (cur, backing) == 0;
}

bool
pgd_loop_find (const char *backing, int *nr)
{
  cleanup_dir DIR *d = opendir ("/sys/block");
  struct dirent *de;

  if (d == NULL)
    return false;
  while ((de = readdir (d)) != NULL)
    {
      int n;
      char tail;
      if (sscanf (de->d_name, "loop%d%c", &n, &tail) != 1)
        continue;
      if (pgd_loop_bound_to (n, backing))
        {
          *nr = n;
          return true;
        }
    }
  return false;
}

int
pgd_loop_wait_detached (int nr, const char *backing, unsigned timeout_ms, struct pgd_err *err)
{
  uint64_t deadline = pgd_now_ns () + (uint64_t)timeout_ms * 1000000ULL;
  unsigned nap = 1;

  while (pgd_loop_bound_to (nr, backing))
    {
      if (pgd_now_ns () >= deadline)
        return pgd_error (err, ETIMEDOUT, "/dev/loop%d still serves %s", nr, backing);
      pgd_sleep_ms (nap);
      if (nap < 64)
        nap *= 2;
    }
  return 0;
}

int
pgd_loop_detach (int nr, struct pgd_err *err)
{
  char path[64];
  cleanup_close int fd = -1;

  pgd_loop_path (nr, path, sizeof path);
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT || errno == ENXIO ? 0 : pgd_error (err, errno, "open %s", path);
  if (ioctl (fd, LOOP_CLR_FD, 0) < 0 && errno != ENXIO)
    return pgd_error (err, errno, "detach %s", path);
  return 0;
}
