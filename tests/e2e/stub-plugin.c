/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A stand-in for ploop-graphdriver inside a managed-plugin container, used by
   t_managed_ns.sh to check the runtime environment config.json gives the plugin:
   it forks a child that stands for a per-image server, probes /dev/fuse and a free
   loop device the way the user engine does, writes what it found to
   /var/lib/ploop/stub.txt and answers every connection on the --socket path with
   an empty JSON object. */
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void
on_term (int signo)
{
  (void)signo;
  _exit (0);
}

static const char *
probe (const char *path)
{
  int fd = open (path, O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return strerror (errno);
  close (fd);
  return "ok";
}

int
main (int argc, char **argv)
{
  const char *sock = "/run/docker/plugins/ploop.sock";
  static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  char loopdev[64] = "none";
  int s, ctl, n = -1;
  pid_t child;
  FILE *f;

  for (int i = 1; i + 1 < argc; i++)
    if (strcmp (argv[i], "--socket") == 0)
      sock = argv[i + 1];
  signal (SIGTERM, on_term);
  signal (SIGPIPE, SIG_IGN);

  child = fork ();
  if (child == 0)
    {
      setsid ();
      for (;;)
        pause ();
    }

  ctl = open ("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl >= 0)
    {
      n = ioctl (ctl, LOOP_CTL_GET_FREE);
      close (ctl);
    }
  if (n >= 0)
    snprintf (loopdev, sizeof loopdev, "/dev/loop%d", n);
  f = fopen ("/var/lib/ploop/stub.txt.tmp", "w");
  if (f)
    {
      fprintf (f, "pid %d\nchild %d\nfuse %s\nloop-control %s\nloop %s %s\n", (int)getpid (),
               (int)child, probe ("/dev/fuse"), ctl >= 0 ? "ok" : strerror (errno), loopdev,
               n >= 0 ? probe (loopdev) : "no free device");
      fclose (f);
      rename ("/var/lib/ploop/stub.txt.tmp", "/var/lib/ploop/stub.txt");
    }

  s = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  snprintf (addr.sun_path, sizeof addr.sun_path, "%s", sock);
  unlink (sock);
  if (s < 0 || bind (s, (struct sockaddr *)&addr, sizeof addr) < 0 || listen (s, 16) < 0)
    {
      perror (sock);
      return 1;
    }
  for (;;)
    {
      char buf[4096];
      int c = accept (s, NULL, NULL);
      if (c < 0)
        continue;
      if (read (c, buf, sizeof buf) >= 0 && write (c, reply, sizeof reply - 1) < 0)
        {
          /* the peer went away: nothing to do */
        }
      close (c);
    }
}
