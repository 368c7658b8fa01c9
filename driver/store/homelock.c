/* SPDX-License-Identifier: GPL-2.0-or-later */
/* One owner per Home: the plugin that serves a Home holds an exclusive flock on
   <Home>/.lock, whose content is its pid. A second plugin on the same Home (another
   socket, a copy started by hand) would adopt and unmount the first one's layers under
   its containers; it is refused instead, with the holder's pid in the error. The lock
   goes with the process (exit, crash, kill -9); image servers do not inherit it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "internal.h"

#define HOME_LOCK_FILE ".lock"

int
pgd_home_lock (struct pgd_layers *l, const char *home, struct pgd_err *err)
{
  char path[PATH_MAX], pid[32];

  if (l->home_lock_fd >= 0 && strcmp (l->locked_home, home) == 0)
    return 0;
  snprintf (path, sizeof path, "%s/" HOME_LOCK_FILE, home);
  int fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return pgd_error (err, errno, "open %s", path);
  if (flock (fd, LOCK_EX | LOCK_NB) < 0)
    {
      int e = errno;
      ssize_t n = e == EWOULDBLOCK ? pread (fd, pid, sizeof pid - 1, 0) : 0;
      close (fd);
      if (e != EWOULDBLOCK)
        return pgd_error (err, e, "lock %s", path);
      pid[n > 0 ? n : 0] = '\0';
      pid[strcspn (pid, "\n")] = '\0';
      return pgd_error (err, EBUSY,
                        "Home %s is in use by another ploop-graphdriver (pid %s, "
                        "holding %s)",
                        home, pid[0] ? pid : "unknown", path);
    }
  int len = snprintf (pid, sizeof pid, "%d\n", (int)getpid ());
  if (ftruncate (fd, 0) < 0 || pwrite (fd, pid, len, 0) != len)
    {
      int e = errno;
      close (fd);
      return pgd_error (err, e, "write %s", path);
    }
  pgd_home_unlock (l);
  l->home_lock_fd = fd;
  snprintf (l->locked_home, sizeof l->locked_home, "%s", home);
  return 0;
}

void
pgd_home_unlock (struct pgd_layers *l)
{
  if (l->home_lock_fd < 0)
    return;
  close (l->home_lock_fd); /* the pid stays in the file: only the flock counts */
  l->home_lock_fd = -1;
  l->locked_home[0] = '\0';
}
