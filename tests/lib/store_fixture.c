/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "store_fixture.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util.h"

void
tl_store_prepare (struct tl_store *s, const char *name)
{
  const char *b = getenv ("PGD_BUILD");
  char *r = realpath (b ? b : "build", NULL);

  cr_assert_not_null (r, "build dir");
  snprintf (s->exe, sizeof s->exe, "%s/ploop-graphdriver", r);
  free (r);
  signal (SIGPIPE, SIG_IGN);
  snprintf (s->tmp, sizeof s->tmp, "/var/tmp/pgd-%s.XXXXXX", name);
  cr_assert_not_null (mkdtemp (s->tmp));
  snprintf (s->home, sizeof s->home, "%s/home", s->tmp);
  snprintf (s->state, sizeof s->state, "%s/state.json", s->tmp);
}

void
tl_store_setup (struct tl_store *s, const char *name)
{
  struct pgd_err err = { 0 };

  tl_store_prepare (s, name);
  tl_store_open (s);
  struct pgd_init_req req = { .home = s->home };
  cr_assert_eq (pgd_layers_ops.init (s->l, &req, &err), 0, "init: %s", err.msg);
}

int
tl_store_open_rc (struct tl_store *s, struct pgd_err *err)
{
  struct pgd_layers_config cfg = { .state_file = s->state,
                                   .engine = "user",
                                   .exe = s->exe,
                                   .linger_ms = s->linger_ms,
                                   .stall_ms = s->stall_ms };
  return pgd_layers_open (&s->l, &cfg, err);
}

void
tl_store_open (struct tl_store *s)
{
  struct pgd_err err = { 0 };
  cr_assert_eq (tl_store_open_rc (s, &err), 0, "open: %s", err.msg);
}

void
tl_store_close (struct tl_store *s)
{
  pgd_layers_close (s->l);
  s->l = NULL;
}

int
tl_servers_under (const char *dir, pid_t *out, int max)
{
  DIR *d = opendir ("/proc");
  struct dirent *de;
  size_t dlen = strlen (dir);
  int n = 0;

  if (d == NULL)
    return 0;
  while ((de = readdir (d)) != NULL && n < max)
    {
      char path[64], args[8192];
      pid_t pid = (pid_t)atoi (de->d_name);
      if (pid <= 0)
        continue;
      snprintf (path, sizeof path, "/proc/%d/cmdline", (int)pid);
      int fd = open (path, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        continue;
      ssize_t len = read (fd, args, sizeof args - 1);
      close (fd);
      if (len <= 0)
        continue;
      args[len] = '\0';
      bool serve = false, ours = false;
      for (char *a = args; a < args + len; a += strlen (a) + 1)
        {
          if (strcmp (a, "serve-image") == 0)
            serve = true;
          else if (strncmp (a, dir, dlen) == 0 && a[dlen] == '/')
            ours = true;
        }
      if (serve && ours)
        out[n++] = pid;
    }
  closedir (d);
  return n;
}

void
tl_wait_gone (pid_t pid)
{
  int fd = (int)syscall (SYS_pidfd_open, pid, 0);
  if (fd < 0)
    return; /* already gone */
  struct pollfd pfd = { .fd = fd, .events = POLLIN };
  while (poll (&pfd, 1, -1) < 0 && errno == EINTR)
    ;
  close (fd);
}

void
tl_store_teardown (struct tl_store *s)
{
  struct pgd_err err;
  pid_t pids[64];
  char cmd[PATH_MAX * 2];

  if (s->tmp[0] == '\0')
    return;
  if (s->l)
    {
      pgd_layers_shutdown (s->l);
      tl_store_close (s);
    }
  snprintf (cmd, sizeof cmd,
            "awk '{print $5}' /proc/self/mountinfo | grep '^%s/' | sort -r | "
            "xargs -r -n1 umount -l 2>/dev/null; true",
            s->tmp);
  if (system (cmd) != 0)
    fprintf (stderr, "cleanup of mounts failed\n");
  int n = tl_servers_under (s->tmp, pids, 64);
  for (int i = 0; i < n; i++)
    {
      kill (pids[i], SIGKILL);
      tl_wait_gone (pids[i]);
    }
  snprintf (
      cmd, sizeof cmd,
      "for f in /sys/block/loop*/loop/backing_file; do "
      "grep -q '^%s/' \"$f\" 2>/dev/null && losetup -d /dev/$(basename $(dirname $(dirname $f))); "
      "done 2>/dev/null; true",
      s->tmp);
  if (system (cmd) != 0)
    fprintf (stderr, "cleanup of loop devices failed\n");
  if (pgd_rm_rf (s->tmp, &err) < 0)
    fprintf (stderr, "cleanup: %s\n", err.msg);
  s->tmp[0] = '\0';
}

void
tl_create (struct tl_store *s, const char *id, const char *parent, bool rw)
{
  struct pgd_create_req req = { .id = id, .parent = parent, .rw = rw };
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_layers_ops.create (s->l, &req, &err), 0, "create %s: %s", id, err.msg);
}

char *
tl_get (struct tl_store *s, const char *id)
{
  char *dir = NULL;
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_layers_ops.get (s->l, id, NULL, &dir, &err), 0, "get %s: %s", id, err.msg);
  return dir;
}

void
tl_put (struct tl_store *s, const char *id)
{
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_layers_ops.put (s->l, id, &err), 0, "put %s: %s", id, err.msg);
}

void
tl_remove (struct tl_store *s, const char *id)
{
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_layers_ops.remove (s->l, id, &err), 0, "remove %s: %s", id, err.msg);
}

void
tl_fill (const char *dir, const char *name, int mib, bool sync)
{
  static char buf[1 << 20];
  char path[PATH_MAX * 2];

  snprintf (path, sizeof path, "%s/%s", dir, name);
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  cr_assert_geq (fd, 0, "open %s", path);
  memset (buf, 'x', sizeof buf);
  for (int i = 0; i < mib; i++)
    cr_assert_eq (write (fd, buf, sizeof buf), (ssize_t)sizeof buf, "write %s", path);
  if (sync)
    cr_assert_eq (fsync (fd), 0, "fsync %s", path);
  close (fd);
}
