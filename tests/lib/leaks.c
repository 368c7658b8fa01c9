/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Leak probes: open fds, loop devices, mounts, processes, directory entries. */
#include "leaks.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Append a formatted piece to OUT (CAP bytes), truncating quietly. */
static void
add (char *out, size_t cap, const char *fmt, ...)
{
  va_list ap;
  size_t n;

  if (out == NULL || cap == 0)
    return;
  n = strnlen (out, cap);
  if (n + 1 >= cap)
    return;
  va_start (ap, fmt);
  vsnprintf (out + n, cap - n, fmt, ap);
  va_end (ap);
}

static void
clear (char *out, size_t cap)
{
  if (out != NULL && cap > 0)
    out[0] = '\0';
}

/* The first CAP-1 bytes of PATH, NUL-terminated, with NULs and a final newline turned
   into blanks; -1 when it cannot be read. */
static ssize_t
read_small (const char *path, char *buf, size_t cap)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  ssize_t n;

  if (fd < 0)
    return -1;
  n = read (fd, buf, cap - 1);
  close (fd);
  if (n < 0)
    return -1;
  buf[n] = '\0';
  for (ssize_t i = 0; i < n; i++)
    if (buf[i] == '\0')
      buf[i] = ' ';
  if (n > 0 && buf[n - 1] == '\n')
    buf[--n] = '\0';
  return n;
}

int
lk_fd_count (pid_t pid)
{
  char path[64];
  DIR *d;
  struct dirent *de;
  int n = 0;

  snprintf (path, sizeof path, "/proc/%d/fd", (int)pid);
  d = opendir (path);
  if (d == NULL)
    return -1;
  while ((de = readdir (d)) != NULL)
    n += de->d_name[0] != '.';
  closedir (d);
  return n;
}

void
lk_fd_list (pid_t pid, char *out, size_t cap)
{
  char path[64], link[PATH_MAX + 64], target[PATH_MAX];
  DIR *d;
  struct dirent *de;

  clear (out, cap);
  snprintf (path, sizeof path, "/proc/%d/fd", (int)pid);
  d = opendir (path);
  if (d == NULL)
    return;
  while ((de = readdir (d)) != NULL)
    {
      ssize_t n;
      if (de->d_name[0] == '.')
        continue;
      snprintf (link, sizeof link, "%s/%s", path, de->d_name);
      n = readlink (link, target, sizeof target - 1);
      target[n > 0 ? n : 0] = '\0';
      add (out, cap, "%s -> %s\n", de->d_name, target);
    }
  closedir (d);
}

int
lk_loops_under (const char *dir, char *out, size_t cap)
{
  size_t dlen = strlen (dir);
  DIR *d = opendir ("/sys/block");
  struct dirent *de;
  int n = 0;

  clear (out, cap);
  if (d == NULL)
    return 0;
  while ((de = readdir (d)) != NULL)
    {
      char path[PATH_MAX], backing[PATH_MAX];
      if (strncmp (de->d_name, "loop", 4) != 0)
        continue;
      snprintf (path, sizeof path, "/sys/block/%s/loop/backing_file", de->d_name);
      if (read_small (path, backing, sizeof backing) <= 0)
        continue;
      if (strncmp (backing, dir, dlen) == 0 && backing[dlen] == '/')
        {
          n++;
          add (out, cap, "%s(%s) ", de->d_name, backing);
        }
    }
  closedir (d);
  return n;
}

int
lk_mounts_under (const char *dir, char *out, size_t cap)
{
  size_t dlen = strlen (dir);
  char *line = NULL;
  size_t lcap = 0;
  int n = 0;
  FILE *f = fopen ("/proc/self/mountinfo", "re");

  clear (out, cap);
  if (f == NULL)
    return -1;
  while (getline (&line, &lcap, f) > 0)
    {
      char *save = NULL, *tok = pgd_mountinfo_point (line, &save);
      if (tok != NULL && strncmp (tok, dir, dlen) == 0 && tok[dlen] == '/')
        {
          n++;
          add (out, cap, "%s ", tok);
        }
    }
  free (line);
  fclose (f);
  return n;
}

int
lk_procs_matching (pid_t except, char *out, size_t cap, const char *const *needles)
{
  DIR *d = opendir ("/proc");
  struct dirent *de;
  int n = 0;

  clear (out, cap);
  if (d == NULL)
    return -1;
  while ((de = readdir (d)) != NULL)
    {
      char path[64], args[8192];
      pid_t pid = (pid_t)atoi (de->d_name);
      bool all = true;

      if (pid <= 0 || pid == except || pid == getpid ())
        continue;
      snprintf (path, sizeof path, "/proc/%d/cmdline", (int)pid);
      if (read_small (path, args, sizeof args) <= 0)
        continue; /* gone, or a zombie / kernel thread */
      for (const char *const *s = needles; *s && all; s++)
        all = strstr (args, *s) != NULL;
      if (all)
        {
          n++;
          add (out, cap, "%d %s\n", (int)pid, args);
        }
    }
  closedir (d);
  return n;
}

int
lk_dir_entries (const char *dir, const char *prefix, char *out, size_t cap)
{
  size_t plen = strlen (prefix);
  DIR *d = opendir (dir);
  struct dirent *de;
  int n = 0;

  clear (out, cap);
  if (d == NULL)
    return errno == ENOENT ? 0 : -1;
  while ((de = readdir (d)) != NULL)
    {
      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
        continue;
      if (strncmp (de->d_name, prefix, plen) != 0)
        continue;
      n++;
      add (out, cap, "%s ", de->d_name);
    }
  closedir (d);
  return n;
}
