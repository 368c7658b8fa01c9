/* SPDX-License-Identifier: GPL-2.0-or-later */
/* bench/callproxy: a timing relay between dockerd and the plugin, for bench/profile.sh.

   callproxy LISTEN_SOCKET PLUGIN_SOCKET PLUGIN_PID

   Listens on LISTEN_SOCKET (where dockerd looks for the plugin), relays every
   connection to PLUGIN_SOCKET, and prints one line per HTTP call on stdout:

     C <accepted> <answered> <method> <id> <status> <first answer byte>

   (epoch seconds, CLOCK_REALTIME like `date +%s%N`). <answered> is when the plugin
   ended its answer (EOF: it sends Connection: close). The relay costs one extra
   Unix-socket hop per call. It exits, removing LISTEN_SOCKET, once PLUGIN_PID is
   gone, so the plugin's normal stop also stops it.
   Built by bench/profile.sh with `cc -O2 -pthread`; not part of the plugin. */

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 4096
#define BUF_SIZE (256 * 1024)

static const char *plugin_path;
static const char *listen_path;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

struct call
{
  int client, plugin;
  double accepted;
  char head[HEAD_MAX + 1]; /* the first bytes of the request */
  size_t head_len;
};

static double
now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
write_all (int fd, const char *p, size_t n)
{
  while (n > 0)
    {
      ssize_t w = write (fd, p, n);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        return -1;
      p += w;
      n -= (size_t)w;
    }
  return 0;
}

/* dockerd -> plugin; keeps the head of the request for the log. After the plugin
   stops reading, the rest is drained so that dockerd never blocks. */
static void *
pump_request (void *arg)
{
  struct call *c = arg;
  char *buf = malloc (BUF_SIZE);
  int forward = 1;
  ssize_t n;

  if (buf == NULL)
    return NULL;
  while ((n = read (c->client, buf, BUF_SIZE)) != 0)
    {
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          break;
        }
      if (c->head_len < HEAD_MAX)
        {
          size_t k = (size_t)n < HEAD_MAX - c->head_len ? (size_t)n : HEAD_MAX - c->head_len;
          memcpy (c->head + c->head_len, buf, k);
          c->head_len += k;
        }
      if (forward && write_all (c->plugin, buf, (size_t)n) < 0)
        forward = 0;
    }
  shutdown (c->plugin, SHUT_WR);
  free (buf);
  return NULL;
}

/* copy the token after PREFIX in S (up to a char in STOP) into OUT */
static void
field (const char *s, const char *prefix, const char *stop, char *out, size_t len)
{
  const char *p = strstr (s, prefix);
  size_t n;

  snprintf (out, len, "-");
  if (p == NULL)
    return;
  p += strlen (prefix);
  n = strcspn (p, stop);
  if (n == 0)
    return;
  if (n >= len)
    n = len - 1;
  memcpy (out, p, n);
  out[n] = '\0';
}

static void *
serve (void *arg)
{
  struct call *c = arg;
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  char *buf = malloc (BUF_SIZE);
  char status[8] = "-", method[64], id[160];
  double first = 0, answered;
  pthread_t req;
  ssize_t n;

  c->plugin = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  snprintf (sa.sun_path, sizeof sa.sun_path, "%s", plugin_path);
  if (buf == NULL || c->plugin < 0 || connect (c->plugin, (struct sockaddr *)&sa, sizeof sa) < 0)
    {
      fprintf (stderr, "callproxy: connect %s: %s\n", plugin_path, strerror (errno));
      close (c->client);
      if (c->plugin >= 0)
        close (c->plugin);
      free (buf);
      free (c);
      return NULL;
    }
  pthread_create (&req, NULL, pump_request, c);
  while ((n = read (c->plugin, buf, BUF_SIZE)) != 0)
    {
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          break;
        }
      if (first == 0)
        {
          first = now ();
          if (n > 12 && memcmp (buf, "HTTP/1.", 7) == 0)
            snprintf (status, sizeof status, "%.3s", buf + 9);
        }
      if (write_all (c->client, buf, (size_t)n) < 0)
        break;
    }
  answered = now ();
  shutdown (c->client, SHUT_WR);
  pthread_join (req, NULL);
  c->head[c->head_len] = '\0';
  field (c->head, "POST /", " ?", method, sizeof method);
  field (c->head, "\"ID\":\"", "\"", id, sizeof id);
  if (strcmp (id, "-") == 0)
    field (c->head, "?id=", "& ", id, sizeof id); /* ApplyDiff, Diff: query string */
  pthread_mutex_lock (&out_lock);
  printf ("C %.6f %.6f %s %s %s %.6f\n", c->accepted, answered, method, id, status,
          first ? first : answered);
  fflush (stdout);
  pthread_mutex_unlock (&out_lock);
  close (c->client);
  close (c->plugin);
  free (buf);
  free (c);
  return NULL;
}

static void *
watch (void *arg)
{
  pid_t pid = (pid_t)(long)arg;

  while (kill (pid, 0) == 0 || errno != ESRCH)
    usleep (100000);
  unlink (listen_path);
  _exit (0);
}

int
main (int argc, char **argv)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  pthread_attr_t detached;
  pthread_t t;
  int fd;

  if (argc != 4)
    {
      fprintf (stderr, "usage: %s LISTEN_SOCKET PLUGIN_SOCKET PLUGIN_PID\n", argv[0]);
      return 2;
    }
  listen_path = argv[1];
  plugin_path = argv[2];
  signal (SIGPIPE, SIG_IGN);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  snprintf (sa.sun_path, sizeof sa.sun_path, "%s", listen_path);
  unlink (listen_path);
  if (fd < 0 || bind (fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen (fd, 64) < 0)
    {
      fprintf (stderr, "callproxy: listen on %s: %s\n", listen_path, strerror (errno));
      return 1;
    }
  pthread_attr_init (&detached);
  pthread_attr_setdetachstate (&detached, PTHREAD_CREATE_DETACHED);
  pthread_create (&t, &detached, watch, (void *)(long)atol (argv[3]));
  for (;;)
    {
      struct call *c;
      int cfd = accept4 (fd, NULL, NULL, SOCK_CLOEXEC);

      if (cfd < 0)
        {
          if (errno == EINTR || errno == ECONNABORTED)
            continue;
          fprintf (stderr, "callproxy: accept: %s\n", strerror (errno));
          return 1;
        }
      c = calloc (1, sizeof *c);
      if (c == NULL)
        {
          close (cfd);
          continue;
        }
      c->client = cfd;
      c->accepted = now ();
      if (pthread_create (&t, &detached, serve, c) != 0)
        {
          close (cfd);
          free (c);
        }
    }
}
