/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Protocol-test helpers: the server process, raw HTTP over its Unix socket, cleanup. */
#include "proto_client.h"
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/loop.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 65536

static void
sleep_ms (int ms)
{
  struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
  nanosleep (&ts, NULL);
}

static long long
now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
pc_binary (char *out)
{
  const char *build = getenv ("PGD_BUILD");
  char rel[PATH_MAX];

  snprintf (rel, sizeof rel, "%s/ploop-graphdriver", build && *build ? build : "build");
  if (realpath (rel, out) == NULL || access (out, X_OK) < 0)
    {
      fprintf (stderr, "proto_client: cannot run %s (set PGD_BUILD): %s\n", rel, strerror (errno));
      return -1;
    }
  return 0;
}

bool
pc_alive (struct pc_server *s)
{
  int status;

  if (s->pid <= 0)
    return false;
  if (waitpid (s->pid, &status, WNOHANG) == s->pid)
    {
      s->pid = 0;
      return false;
    }
  return true;
}

const char *
pc_log_tail (const struct pc_server *s)
{
  static char tail[4096];
  int fd = open (s->log, O_RDONLY | O_CLOEXEC);
  off_t size;
  ssize_t n = 0;

  tail[0] = '\0';
  if (fd < 0)
    return tail;
  size = lseek (fd, 0, SEEK_END);
  if (size > (off_t)sizeof tail - 1)
    lseek (fd, size - (off_t)(sizeof tail - 1), SEEK_SET);
  else
    lseek (fd, 0, SEEK_SET);
  n = read (fd, tail, sizeof tail - 1);
  tail[n > 0 ? n : 0] = '\0';
  close (fd);
  return tail;
}

/* Ready when a Capabilities request gets its 200 (the socket alone may be listening
   while the store still opens). */
static int
wait_ready (struct pc_server *s)
{
  long long deadline = now_ms () + PC_SAFETY_MS;

  while (now_ms () < deadline)
    {
      struct pc_response r;

      if (!pc_alive (s))
        {
          fprintf (stderr, "proto_client: server exited during start:\n%s\n", pc_log_tail (s));
          return -1;
        }
      if (access (s->socket, F_OK) == 0
          && pc_post (s, "/GraphDriver.Capabilities", "{}\n", &r) == 0)
        {
          int status = r.status;
          pc_response_free (&r);
          if (status == 200)
            return 0;
        }
      sleep_ms (20);
    }
  fprintf (stderr, "proto_client: server not ready:\n%s\n", pc_log_tail (s));
  return -1;
}

/* Start the binary with --socket SOCKET_ARG; ACTIVATION_FD >= 0 is handed over as
   systemd's fd 3. Ready when S->socket answers. */
static int
spawn (struct pc_server *s, bool with_home, int activation_fd, const char *socket_arg)
{
  char bin[PATH_MAX];
  pid_t parent = getpid ();
  int logfd;
  pid_t pid;

  if (pc_binary (bin) < 0)
    return -1;
  logfd = open (s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (logfd < 0)
    return -1;
  pid = fork ();
  if (pid < 0)
    {
      close (logfd);
      return -1;
    }
  if (pid == 0)
    {
      sigset_t none;
      /* never outlive the test, even when it crashes */
      prctl (PR_SET_PDEATHSIG, SIGKILL);
      if (getppid () != parent)
        _exit (127);
      sigemptyset (&none);
      sigprocmask (SIG_SETMASK, &none, NULL);
      if (activation_fd >= 0)
        {
          char pidbuf[32];
          if (activation_fd != 3)
            dup2 (activation_fd, 3);
          fcntl (3, F_SETFD, 0);
          snprintf (pidbuf, sizeof pidbuf, "%d", (int)getpid ());
          setenv ("LISTEN_PID", pidbuf, 1);
          setenv ("LISTEN_FDS", "1", 1);
        }
      dup2 (logfd, STDOUT_FILENO);
      dup2 (logfd, STDERR_FILENO);
      char *argv[12]
          = { bin, "--socket", (char *)socket_arg, "--state", s->state, "--log-level", "debug" };
      int n = 7;
      if (s->extra_arg)
        argv[n++] = (char *)s->extra_arg;
      if (with_home)
        {
          argv[n++] = "--home";
          argv[n++] = s->home;
        }
      argv[n] = NULL;
      execv (bin, argv);
      _exit (127);
    }
  close (logfd);
  s->pid = pid;
  return wait_ready (s);
}

int
pc_spawn (struct pc_server *s, bool with_home)
{
  return spawn (s, with_home, -1, s->socket);
}

int
pc_spawn_activated (struct pc_server *s, bool with_home, int listen_fd, const char *path)
{
  char requested[PATH_MAX];

  /* --socket keeps naming the usual path, which must stay unused; clients go to PATH */
  snprintf (requested, sizeof requested, "%s", s->socket);
  snprintf (s->socket, sizeof s->socket, "%s", path);
  return spawn (s, with_home, listen_fd, requested);
}

int
pc_start (struct pc_server *s, bool with_home)
{
  return pc_start_with (s, with_home, NULL);
}

int
pc_start_with (struct pc_server *s, bool with_home, const char *extra_arg)
{
  memset (s, 0, sizeof *s);
  s->extra_arg = extra_arg;
  snprintf (s->dir, sizeof s->dir, "/tmp/pgd-proto-XXXXXX");
  if (mkdtemp (s->dir) == NULL)
    {
      s->dir[0] = '\0';
      return -1;
    }
  pgd_pathf (s->socket, sizeof s->socket, "%s/plugins/ploop.sock", s->dir);
  pgd_pathf (s->state, sizeof s->state, "%s/state.json", s->dir);
  pgd_pathf (s->home, sizeof s->home, "%s/home", s->dir);
  pgd_pathf (s->log, sizeof s->log, "%s/server.log", s->dir);
  return pc_spawn (s, with_home);
}

int
pc_signal_and_wait (struct pc_server *s, int sig, int timeout_ms, int *status)
{
  long long deadline = now_ms () + timeout_ms;

  if (s->pid <= 0)
    return -1;
  kill (s->pid, sig);
  do
    {
      if (waitpid (s->pid, status, WNOHANG) == s->pid)
        {
          s->pid = 0;
          return 0;
        }
      sleep_ms (10);
    }
  while (now_ms () < deadline);
  return -1;
}

/* Lazily unmount every mount below DIR, deepest first; returns how many were found. */
static int
unmount_under (const char *dir)
{
  size_t dlen = strlen (dir);
  char *points[512];
  int n = 0;
  char *line = NULL;
  size_t cap = 0;
  FILE *f = fopen ("/proc/self/mountinfo", "re");

  if (f == NULL)
    return 0;
  while (n < 512 && getline (&line, &cap, f) > 0)
    {
      char *save = NULL, *tok = pgd_mountinfo_point (line, &save);
      if (tok != NULL && strncmp (tok, dir, dlen) == 0 && tok[dlen] == '/')
        points[n++] = strdup (tok);
    }
  free (line);
  fclose (f);
  for (int i = 0; i < n; i++) /* longest path first: children before parents */
    for (int j = i + 1; j < n; j++)
      if (points[j] && (!points[i] || strlen (points[j]) > strlen (points[i])))
        {
          char *t = points[i];
          points[i] = points[j];
          points[j] = t;
        }
  for (int i = 0; i < n; i++)
    {
      if (points[i] && umount2 (points[i], MNT_DETACH) < 0 && errno != EINVAL)
        fprintf (stderr, "proto_client: umount %s: %s\n", points[i], strerror (errno));
      free (points[i]);
    }
  return n;
}

/* Kill processes (image servers) whose command line mentions DIR. */
static void
kill_leftovers (const char *dir)
{
  DIR *d = opendir ("/proc");
  struct dirent *de;

  if (d == NULL)
    return;
  while ((de = readdir (d)) != NULL)
    {
      char path[300], args[8192];
      pid_t pid = (pid_t)atoi (de->d_name);
      ssize_t len;
      int fd;

      if (pid <= 1 || pid == getpid ())
        continue;
      snprintf (path, sizeof path, "/proc/%d/cmdline", (int)pid);
      fd = open (path, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        continue;
      len = read (fd, args, sizeof args - 1);
      close (fd);
      if (len <= 0)
        continue;
      for (ssize_t i = 0; i < len; i++)
        if (args[i] == '\0')
          args[i] = ' ';
      args[len] = '\0';
      if (strstr (args, dir) != NULL)
        kill (pid, SIGKILL);
    }
  closedir (d);
}

/* Detach loop devices whose backing file lies below DIR. */
static void
detach_loops (const char *dir)
{
  DIR *d = opendir ("/sys/block");
  struct dirent *de;

  if (d == NULL)
    return;
  while ((de = readdir (d)) != NULL)
    {
      char path[PATH_MAX], backing[PATH_MAX];
      ssize_t n;
      int fd;

      if (strncmp (de->d_name, "loop", 4) != 0)
        continue;
      snprintf (path, sizeof path, "/sys/block/%s/loop/backing_file", de->d_name);
      fd = open (path, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        continue;
      n = read (fd, backing, sizeof backing - 1);
      close (fd);
      if (n <= 0)
        continue;
      backing[n] = '\0';
      if (strncmp (backing, dir, strlen (dir)) != 0)
        continue;
      snprintf (path, sizeof path, "/dev/%s", de->d_name);
      fd = open (path, O_RDONLY | O_CLOEXEC);
      if (fd >= 0)
        {
          ioctl (fd, LOOP_CLR_FD, 0);
          close (fd);
        }
    }
  closedir (d);
}

static int
rm_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st, (void)ftw;
  if (flag == FTW_DP)
    rmdir (path);
  else
    unlink (path);
  return 0;
}

int
pc_stop (struct pc_server *s)
{
  int status = 0;
  int ret = 0;

  if (s->pid > 0)
    {
      if (pc_signal_and_wait (s, SIGTERM, PC_SAFETY_MS, &status) < 0)
        {
          pc_signal_and_wait (s, SIGKILL, PC_SAFETY_MS, &status);
          ret = -1;
        }
      else if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
        ret = -1;
      if (ret < 0)
        fprintf (stderr, "proto_client: unclean server exit (status 0x%x):\n%s\n", status,
                 pc_log_tail (s));
    }
  if (s->dir[0] == '\0')
    return ret;
  for (int round = 0; round < 5; round++)
    {
      int found = unmount_under (s->dir);
      kill_leftovers (s->dir);
      detach_loops (s->dir);
      if (found == 0)
        break;
      sleep_ms (50);
    }
  /* FTW_MOUNT: never reach into a mount that could not be removed */
  nftw (s->dir, rm_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  s->dir[0] = '\0';
  return ret;
}

int
pc_connect (const struct pc_server *s)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  struct timeval tv = { PC_SAFETY_MS / 1000, 0 };
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd < 0)
    return -1;
  pgd_pathf (sa.sun_path, sizeof sa.sun_path, "%s", s->socket);
  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect (fd, (struct sockaddr *)&sa, sizeof sa) < 0)
    {
      int e = errno;
      close (fd);
      errno = e;
      return -1;
    }
  return fd;
}

int
pc_send_all (int fd, const void *buf, size_t len)
{
  const char *p = buf;

  while (len > 0)
    {
      ssize_t n = send (fd, p, len, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return -1;
      p += n;
      len -= (size_t)n;
    }
  return 0;
}

int
pc_send_chunk (int fd, const void *buf, size_t len)
{
  char head[32];

  snprintf (head, sizeof head, "%zx\r\n", len);
  if (pc_send_all (fd, head, strlen (head)) < 0)
    return -1;
  if (len > 0 && pc_send_all (fd, buf, len) < 0)
    return -1;
  return pc_send_all (fd, "\r\n", 2);
}

/* More bytes into the reader: >0, 0 at EOF, -1 on error. */
static ssize_t
fill (struct pc_reader *rd)
{
  ssize_t n;

  if (rd->start == rd->end)
    rd->start = rd->end = 0;
  if (rd->end == sizeof rd->buf && rd->start > 0)
    {
      memmove (rd->buf, rd->buf + rd->start, rd->end - rd->start);
      rd->end -= rd->start;
      rd->start = 0;
    }
  if (rd->end == sizeof rd->buf)
    return -1;
  do
    n = recv (rd->fd, rd->buf + rd->end, sizeof rd->buf - rd->end, 0);
  while (n < 0 && errno == EINTR);
  if (n > 0)
    rd->end += (size_t)n;
  return n;
}

/* One line without its CRLF into LINE; -1 on EOF or error. */
static int
read_line (struct pc_reader *rd, char *line, size_t cap)
{
  for (;;)
    {
      char *nl = memchr (rd->buf + rd->start, '\n', rd->end - rd->start);
      if (nl != NULL)
        {
          size_t len = (size_t)(nl - (rd->buf + rd->start));
          size_t keep = len > 0 && nl[-1] == '\r' ? len - 1 : len;
          if (keep >= cap)
            keep = cap - 1;
          memcpy (line, rd->buf + rd->start, keep);
          line[keep] = '\0';
          rd->start += len + 1;
          return 0;
        }
      if (fill (rd) <= 0)
        return -1;
    }
}

/* Up to CAP bytes into BUF: >0, 0 at EOF, -1 on error. */
static ssize_t
read_some (struct pc_reader *rd, char *buf, size_t cap)
{
  if (rd->start == rd->end)
    {
      ssize_t n = fill (rd);
      if (n <= 0)
        return n;
    }
  size_t n = rd->end - rd->start;
  if (n > cap)
    n = cap;
  memcpy (buf, rd->buf + rd->start, n);
  rd->start += n;
  return (ssize_t)n;
}

int
pc_read_head (struct pc_reader *rd, int fd, struct pc_response *r)
{
  char line[8192];

  memset (r, 0, sizeof *r);
  rd->fd = fd;
  rd->start = rd->end = rd->chunk_left = 0;
  rd->chunk_crlf = false;
  if (read_line (rd, line, sizeof line) < 0 || sscanf (line, "HTTP/1.%*d %d", &r->status) != 1)
    return -1;
  for (;;)
    {
      if (read_line (rd, line, sizeof line) < 0)
        return -1;
      if (line[0] == '\0')
        break;
      char *colon = strchr (line, ':');
      if (colon == NULL)
        continue;
      *colon = '\0';
      char *value = colon + 1;
      while (*value == ' ' || *value == '\t')
        value++;
      struct pc_header *h = realloc (r->headers, (r->nheaders + 1) * sizeof *h);
      if (h == NULL)
        return -1;
      r->headers = h;
      h[r->nheaders].name = strdup (line);
      h[r->nheaders].value = strdup (value);
      r->nheaders++;
    }
  const char *te = pc_header (r, "Transfer-Encoding");
  r->chunked = te != NULL && strcasestr (te, "chunked") != NULL;
  return 0;
}

ssize_t
pc_read_chunk (struct pc_reader *rd, char *buf, size_t cap)
{
  char line[256];
  ssize_t n;

  if (rd->chunk_left == 0)
    {
      if (rd->chunk_crlf && (read_line (rd, line, sizeof line) < 0 || line[0] != '\0'))
        return -1;
      rd->chunk_crlf = false;
      if (read_line (rd, line, sizeof line) < 0 || !isxdigit ((unsigned char)line[0]))
        return -1;
      rd->chunk_left = strtoul (line, NULL, 16);
      if (rd->chunk_left == 0)
        {
          do /* trailers, then the empty line that ends the message */
            if (read_line (rd, line, sizeof line) < 0)
              return -1;
          while (line[0] != '\0');
          return 0;
        }
      rd->chunk_crlf = true;
    }
  n = read_some (rd, buf, cap < rd->chunk_left ? cap : rd->chunk_left);
  if (n <= 0)
    return -1;
  rd->chunk_left -= (size_t)n;
  return n;
}

static int
append (struct pc_response *r, const char *data, size_t len)
{
  char *b = realloc (r->body, r->body_len + len + 1);

  if (b == NULL)
    return -1;
  memcpy (b + r->body_len, data, len);
  r->body = b;
  r->body_len += len;
  b[r->body_len] = '\0';
  return 0;
}

int
pc_read_response (int fd, struct pc_response *r)
{
  struct pc_reader *rd = malloc (sizeof *rd);
  char *buf = malloc (BUF_SIZE);
  const char *cl;
  ssize_t n;

  if (rd == NULL || buf == NULL || pc_read_head (rd, fd, r) < 0)
    {
      free (rd);
      free (buf);
      return -1;
    }
  append (r, "", 0);
  cl = pc_header (r, "Content-Length");
  if (r->chunked)
    {
      while ((n = pc_read_chunk (rd, buf, BUF_SIZE)) > 0)
        append (r, buf, (size_t)n);
      r->complete = n == 0;
    }
  else if (cl != NULL)
    {
      size_t want = strtoull (cl, NULL, 10);
      while (r->body_len < want)
        {
          size_t left = want - r->body_len;
          n = read_some (rd, buf, left < BUF_SIZE ? left : BUF_SIZE);
          if (n <= 0)
            break;
          append (r, buf, (size_t)n);
        }
      r->complete = r->body_len == want;
    }
  else
    {
      while ((n = read_some (rd, buf, BUF_SIZE)) > 0)
        append (r, buf, (size_t)n);
      r->complete = n == 0;
    }
  /* Connection: close means nothing follows and the server hangs up */
  r->closed = rd->start == rd->end && read_some (rd, buf, 1) == 0;
  free (rd);
  free (buf);
  return 0;
}

int
pc_roundtrip (const struct pc_server *s, const void *req, size_t len, struct pc_response *r)
{
  int fd = pc_connect (s);
  int ret;

  memset (r, 0, sizeof *r);
  if (fd < 0)
    return -1;
  ret = pc_send_all (fd, req, len);
  if (ret == 0)
    ret = pc_read_response (fd, r);
  close (fd);
  return ret;
}

int
pc_post (const struct pc_server *s, const char *path, const char *body, struct pc_response *r)
{
  size_t blen = body ? strlen (body) : 0;
  size_t cap = strlen (path) + blen + 256;
  char *req = malloc (cap);
  int n, ret;

  memset (r, 0, sizeof *r);
  if (req == NULL)
    return -1;
  n = snprintf (req, cap,
                "POST %s HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\n"
                "Content-Length: %zu\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\r\n"
                "%s",
                path, blen, body ? body : "");
  ret = pc_roundtrip (s, req, (size_t)n, r);
  free (req);
  return ret;
}

const char *
pc_header (const struct pc_response *r, const char *name)
{
  for (size_t i = 0; i < r->nheaders; i++)
    if (strcasecmp (r->headers[i].name, name) == 0)
      return r->headers[i].value;
  return NULL;
}

json_t *
pc_json (const struct pc_response *r)
{
  if (r->body == NULL)
    return NULL;
  return json_loadb (r->body, r->body_len, 0, NULL);
}

const char *
pc_json_str (const struct pc_response *r, const char *key)
{
  static char value[4096];
  json_t *j = pc_json (r);
  json_t *v = j ? json_object_get (j, key) : NULL;
  const char *ret = NULL;

  if (json_is_string (v))
    {
      snprintf (value, sizeof value, "%s", json_string_value (v));
      ret = value;
    }
  json_decref (j);
  return ret;
}

void
pc_response_free (struct pc_response *r)
{
  for (size_t i = 0; i < r->nheaders; i++)
    {
      free (r->headers[i].name);
      free (r->headers[i].value);
    }
  free (r->headers);
  free (r->body);
  memset (r, 0, sizeof *r);
}

int
pc_worker_fail (char *error, size_t cap, atomic_bool *stop, const char *fmt, ...)
{
  va_list ap;

  if (error[0] == '\0')
    {
      va_start (ap, fmt);
      vsnprintf (error, cap, fmt, ap);
      va_end (ap);
    }
  atomic_store (stop, true);
  return -1;
}

int
pc_worker_call (const struct pc_server *s, char *error, size_t cap, atomic_bool *stop,
                bool want_closed, const char *path, const char *body, json_t **out)
{
  struct pc_response r;
  int ret = 0;

  if (pc_post (s, path, body, &r) < 0)
    return pc_worker_fail (error, cap, stop, "%s %s: no response (%s)", path, body,
                           strerror (errno));
  json_t *j = pc_json (&r);
  json_t *e = j ? json_object_get (j, "Err") : NULL;
  if (r.status != 200)
    ret = pc_worker_fail (error, cap, stop, "%s %s: status %d: %s", path, body, r.status,
                          r.body ? r.body : "");
  else if (!json_is_object (j))
    ret = pc_worker_fail (error, cap, stop, "%s %s: not a JSON object: %s", path, body,
                          r.body ? r.body : "");
  else if (e != NULL && !json_is_null (e) && !(json_is_string (e) && !*json_string_value (e)))
    ret = pc_worker_fail (error, cap, stop, "%s %s: 200 with an Err: %s", path, body, r.body);
  else if (want_closed && !r.closed)
    ret = pc_worker_fail (error, cap, stop, "%s: the connection stayed open after the answer",
                          path);
  pc_response_free (&r);
  if (ret == 0 && out != NULL)
    *out = j;
  else
    json_decref (j);
  return ret;
}
