/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What `docker diff` drives, many at once, against the real binary: Changes, Diff
   (read whole, or given up after its first bytes), DiffSize, Get and Put of layers
   cloned from one parent, from 8 threads, while the idle reaper (--linger 20 ms)
   unmounts the layers between calls and the change tracker records the opens that
   the diffs' reads cause. The server runs with PGD_TRACK_VERIFY=1, so every tracked
   answer is also checked against the full comparison. Bounded in work (rounds), not
   in time. Every call must answer 200 without an Err (a Diff given up early aside),
   and the server must exit 0 at SIGTERM: in an ASan or TSan build of the server
   (PGD_BUILD) a report changes that. Needs root, FUSE and loop devices. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto_client.h"

#define THREADS 8
#define ROUNDS 30 /* calls per thread */
#define SHARED 4  /* children every thread diffs; only their creator writes them */
#define BASE "dr-base"
#define MSG_LEN 4096
/* nesting for the deep-tree test: far past PATH_MAX ("d/" a level), and just within */
#define DEEP_LEVELS 12000
#define WITHIN_LEVELS 2000

static struct pc_server srv;
static atomic_bool stop_all;

struct worker
{
  pthread_t thread;
  int index;
  unsigned seed;
  unsigned calls;
  char error[MSG_LEN];
};

static void
setup (void)
{
  signal (SIGPIPE, SIG_IGN);
  atomic_store (&stop_all, false);
  /* inherited by the server: each tracked answer is checked against the full walk */
  setenv ("PGD_TRACK_VERIFY", "1", 1);
  cr_assert_eq (pc_start_with (&srv, true, "--linger=20"), 0, "the server did not start");
}

static void
teardown (void)
{
  pc_stop (&srv);
  unsetenv ("PGD_TRACK_VERIFY");
}

TestSuite (diffrace, .init = setup, .fini = teardown, .timeout = 900);

/* Record W's first error (later ones are consequences) and stop every thread. */
#define fail(w, ...) pc_worker_fail ((w)->error, sizeof (w)->error, &stop_all, __VA_ARGS__)

/* POST BODY to PATH: 0 when the answer is 200, a JSON object without an Err; the
   object goes to *OUT when OUT is not NULL. */
static int
call (struct worker *w, const char *path, const char *body, json_t **out)
{
  w->calls++;
  return pc_worker_call (&srv, w->error, sizeof w->error, &stop_all, false, path, body, out);
}

static int
get (struct worker *w, const char *id, char *dir)
{
  char body[256];
  json_t *j = NULL;

  snprintf (body, sizeof body, "{\"ID\":\"%s\",\"MountLabel\":\"\"}", id);
  if (call (w, "/GraphDriver.Get", body, &j) < 0)
    return -1;
  json_t *d = json_object_get (j, "Dir");
  snprintf (dir, PATH_MAX, "%s", json_is_string (d) ? json_string_value (d) : "");
  json_decref (j);
  return dir[0] == '/' ? 0 : fail (w, "Get %s: no Dir", id);
}

static int
put (struct worker *w, const char *id)
{
  char body[256];

  snprintf (body, sizeof body, "{\"ID\":\"%s\"}", id);
  return call (w, "/GraphDriver.Put", body, NULL);
}

static int
write_file (struct worker *w, const char *dir, const char *rel, const char *data)
{
  char path[PATH_MAX + 64];

  snprintf (path, sizeof path, "%s/%s", dir, rel);
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return fail (w, "create %s: %s", path, strerror (errno));
  ssize_t n = write (fd, data, strlen (data));
  close (fd);
  return n == (ssize_t)strlen (data) ? 0 : fail (w, "write %s", path);
}

static int
make_dir (struct worker *w, const char *dir, const char *rel)
{
  char path[PATH_MAX + 64];

  snprintf (path, sizeof path, "%s/%s", dir, rel);
  if (mkdir (path, 0755) < 0 && errno != EEXIST)
    return fail (w, "mkdir %s: %s", path, strerror (errno));
  return 0;
}

/* The parent: a few directories and files, a hard link, a symlink. */
static int
fill_base (struct worker *w, const char *dir)
{
  char path[PATH_MAX + 64], lpath[PATH_MAX + 64];

  if (make_dir (w, dir, "a") < 0 || make_dir (w, dir, "a/b") < 0 || make_dir (w, dir, "a/b/c") < 0
      || make_dir (w, dir, "d") < 0)
    return -1;
  for (int i = 0; i < 6; i++)
    {
      char rel[64];
      snprintf (rel, sizeof rel, "a/b/c/f%d", i);
      if (write_file (w, dir, rel, "base\n") < 0)
        return -1;
      snprintf (rel, sizeof rel, "d/g%d", i);
      if (write_file (w, dir, rel, "base data\n") < 0)
        return -1;
    }
  snprintf (path, sizeof path, "%s/d/g0", dir);
  snprintf (lpath, sizeof lpath, "%s/a/hard", dir);
  if (link (path, lpath) < 0)
    return fail (w, "link %s: %s", lpath, strerror (errno));
  snprintf (lpath, sizeof lpath, "%s/a/sym", dir);
  if (symlink ("b/c/f0", lpath) < 0)
    return fail (w, "symlink %s: %s", lpath, strerror (errno));
  return 0;
}

/* One change of child ID, numbered N: a new file, a modified one, a removed one. */
static int
change_child (struct worker *w, const char *dir, const char *id, unsigned n)
{
  char rel[128], path[PATH_MAX + 64];

  snprintf (rel, sizeof rel, "new-%s-%u", id, n);
  if (write_file (w, dir, rel, id) < 0)
    return -1;
  snprintf (rel, sizeof rel, "a/b/c/f%u", n % 6);
  if (write_file (w, dir, rel, "changed\n") < 0)
    return -1;
  snprintf (path, sizeof path, "%s/d/g%u", dir, 1 + n % 5);
  if (unlink (path) < 0 && errno != ENOENT)
    return fail (w, "unlink %s: %s", path, strerror (errno));
  snprintf (rel, sizeof rel, "d/sub%u", n);
  if (make_dir (w, dir, rel) < 0)
    return -1;
  snprintf (rel, sizeof rel, "d/sub%u/x", n);
  return write_file (w, dir, rel, "x\n");
}

static int
create_child (struct worker *w, const char *id)
{
  char body[256], dir[PATH_MAX];

  snprintf (body, sizeof body, "{\"ID\":\"%s\",\"Parent\":\"" BASE "\",\"MountLabel\":\"\"}", id);
  if (call (w, "/GraphDriver.CreateReadWrite", body, NULL) < 0 || get (w, id, dir) < 0)
    return -1;
  int ret = change_child (w, dir, id, 0);
  return put (w, id) < 0 ? -1 : ret;
}

/* Changes of ID against the base must name ID's first new file. */
static int
changes (struct worker *w, const char *id)
{
  char body[256], want[128];
  json_t *j = NULL;
  int ret = -1;

  snprintf (body, sizeof body, "{\"ID\":\"%s\",\"Parent\":\"" BASE "\"}", id);
  if (call (w, "/GraphDriver.Changes", body, &j) < 0)
    return -1;
  snprintf (want, sizeof want, "/new-%s-0", id);
  json_t *arr = json_object_get (j, "Changes"), *c;
  size_t i;
  json_array_foreach (arr, i, c)
  {
    json_t *p = json_object_get (c, "Path");
    if (json_is_string (p) && strcmp (json_string_value (p), want) == 0)
      ret = 0;
  }
  json_decref (j);
  return ret == 0 ? 0 : fail (w, "Changes of %s: no %s", id, want);
}

static int
diff_size (struct worker *w, const char *id)
{
  char body[256];

  snprintf (body, sizeof body, "{\"ID\":\"%s\",\"Parent\":\"" BASE "\"}", id);
  return call (w, "/GraphDriver.DiffSize", body, NULL);
}

/* Diff of ID against the base: read to its end, or (ABANDON) hang up after the head. */
static int
diff (struct worker *w, const char *id, bool abandon)
{
  char body[256], req[512];
  struct pc_response r;

  w->calls++;
  snprintf (body, sizeof body, "{\"ID\":\"%s\",\"Parent\":\"" BASE "\"}", id);
  if (!abandon)
    {
      if (pc_post (&srv, "/GraphDriver.Diff", body, &r) < 0)
        return fail (w, "Diff %s: no response (%s)", id, strerror (errno));
      int ret = r.status == 200 && r.complete && r.body_len >= 1024
                    ? 0
                    : fail (w, "Diff %s: status %d, %s, %zu bytes", id, r.status,
                            r.complete ? "complete" : "cut", r.body_len);
      pc_response_free (&r);
      return ret;
    }
  int n = snprintf (req, sizeof req,
                    "POST /GraphDriver.Diff HTTP/1.1\r\nHost: \r\nContent-Length: %zu\r\n\r\n%s",
                    strlen (body), body);
  int fd = pc_connect (&srv);
  if (fd < 0)
    return fail (w, "Diff %s: connect: %s", id, strerror (errno));
  char buf[64];
  if (pc_send_all (fd, req, (size_t)n) < 0 || read (fd, buf, sizeof buf) <= 0)
    {
      close (fd);
      return fail (w, "Diff %s: nothing came back", id);
    }
  close (fd); /* the server's worker now writes into a pipe nobody reads */
  return 0;
}

static unsigned
next (struct worker *w)
{
  w->seed = w->seed * 1103515245u + 12345u;
  return w->seed >> 16;
}

static void *
worker_main (void *arg)
{
  struct worker *w = arg;
  char own[64], dir[PATH_MAX];

  snprintf (own, sizeof own, "dr-own%d", w->index);
  for (unsigned round = 0; round < ROUNDS && !atomic_load (&stop_all); round++)
    {
      char shared[64];
      snprintf (shared, sizeof shared, "dr-shared%u", next (w) % SHARED);
      /* a short pause now and then: the reaper takes idle layers down meanwhile */
      if (next (w) % 3 == 0)
        usleep (1000 * (next (w) % 40));
      switch (next (w) % 8)
        {
        case 0:
          changes (w, shared);
          break;
        case 1:
          diff_size (w, shared);
          break;
        case 2:
          diff (w, shared, false);
          break;
        case 3:
          diff (w, shared, true);
          break;
        case 4:
          /* a Get held across other threads' diffs of the same layer */
          if (get (w, shared, dir) == 0)
            {
              changes (w, shared);
              put (w, shared);
            }
          break;
        case 5:
          if (get (w, BASE, dir) == 0)
            put (w, BASE);
          break;
        default:
          /* this thread's own child changes, then is diffed at once */
          if (get (w, own, dir) == 0)
            {
              change_child (w, dir, own, round + 1);
              put (w, own);
            }
          /* read to its end: a Diff given up early still runs, and the next round's
             writes would race its check against the full comparison */
          if (next (w) % 2)
            changes (w, own);
          else
            diff (w, own, false);
          break;
        }
    }
  return NULL;
}

Test (diffrace, parallel_diffs_while_the_reaper_unmounts)
{
  struct worker setup_w = { 0 };
  static struct worker workers[THREADS];
  char dir[PATH_MAX], id[64];

  cr_assert_eq (call (&setup_w, "/GraphDriver.CreateReadWrite",
                      "{\"ID\":\"" BASE "\",\"Parent\":\"\",\"MountLabel\":\"\"}", NULL),
                0, "%s", setup_w.error);
  cr_assert_eq (get (&setup_w, BASE, dir), 0, "%s", setup_w.error);
  cr_assert_eq (fill_base (&setup_w, dir), 0, "%s", setup_w.error);
  cr_assert_eq (put (&setup_w, BASE), 0, "%s", setup_w.error);
  for (int i = 0; i < SHARED; i++)
    {
      snprintf (id, sizeof id, "dr-shared%d", i);
      cr_assert_eq (create_child (&setup_w, id), 0, "%s", setup_w.error);
    }
  for (int i = 0; i < THREADS; i++)
    {
      snprintf (id, sizeof id, "dr-own%d", i);
      cr_assert_eq (create_child (&setup_w, id), 0, "%s", setup_w.error);
    }

  for (int i = 0; i < THREADS; i++)
    {
      workers[i] = (struct worker){ .index = i, .seed = 7919u * (unsigned)(i + 1) };
      cr_assert_eq (pthread_create (&workers[i].thread, NULL, worker_main, &workers[i]), 0);
    }
  unsigned calls = 0;
  for (int i = 0; i < THREADS; i++)
    {
      pthread_join (workers[i].thread, NULL);
      calls += workers[i].calls;
    }
  for (int i = 0; i < THREADS; i++)
    cr_assert_eq (workers[i].error[0], '\0', "thread %d: %s\n%s", i, workers[i].error,
                  pc_log_tail (&srv));
  cr_log_info ("diffrace: %u calls", calls);
  cr_assert (pc_alive (&srv), "the server died: %s", pc_log_tail (&srv));
  cr_assert_eq (pc_stop (&srv), 0, "the server did not exit cleanly: %s", pc_log_tail (&srv));
}

/* Nest LEVELS directories named "d" under DIR (by descriptor: no path gets long). */
static int
nest (struct worker *w, const char *dir, int levels)
{
  int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  for (int i = 0; fd >= 0 && i < levels; i++)
    {
      if (mkdirat (fd, "d", 0755) < 0)
        {
          close (fd);
          return fail (w, "mkdir level %d under %s: %s", i, dir, strerror (errno));
        }
      int sub = openat (fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      close (fd);
      fd = sub;
    }
  if (fd < 0)
    return fail (w, "open a level under %s: %s", dir, strerror (errno));
  close (fd);
  return 0;
}

/* A child layer holding LEVELS nested directories. */
static void
deep_child (struct worker *w, const char *id, int levels)
{
  char body[256], dir[PATH_MAX];

  snprintf (body, sizeof body, "{\"ID\":\"%s\",\"Parent\":\"" BASE "\",\"MountLabel\":\"\"}", id);
  cr_assert_eq (call (w, "/GraphDriver.CreateReadWrite", body, NULL), 0, "%s", w->error);
  cr_assert_eq (get (w, id, dir), 0, "%s", w->error);
  cr_assert_eq (nest (w, dir, levels), 0, "%s", w->error);
  cr_assert_eq (put (w, id), 0, "%s", w->error);
}

/* A container may nest directories far deeper than any path can name: the diff of its
   layer was a recursion a level per directory on the request thread's stack, and the
   server died of a SIGSEGV at about 8000 levels. Now a path longer than PATH_MAX is an
   error (dockerd's own diff cannot name it either), and a tree just within the bound
   still fits the stack. */
Test (diffrace, a_tree_nested_past_path_max_is_an_error_not_a_crash)
{
  struct worker w = { 0 };
  struct pc_response r;
  char dir[PATH_MAX];

  cr_assert_eq (call (&w, "/GraphDriver.CreateReadWrite",
                      "{\"ID\":\"" BASE "\",\"Parent\":\"\",\"MountLabel\":\"\"}", NULL),
                0, "%s", w.error);
  cr_assert_eq (get (&w, BASE, dir), 0, "%s", w.error);
  cr_assert_eq (put (&w, BASE), 0, "%s", w.error);
  deep_child (&w, "dr-deep", DEEP_LEVELS);
  deep_child (&w, "dr-within", WITHIN_LEVELS);

  static const char *const calls[] = { "/GraphDriver.Changes", "/GraphDriver.DiffSize" };
  for (size_t i = 0; i < sizeof calls / sizeof *calls; i++)
    {
      cr_assert_eq (pc_post (&srv, calls[i], "{\"ID\":\"dr-deep\",\"Parent\":\"" BASE "\"}", &r), 0,
                    "%s: no answer (the server died?): %s", calls[i], pc_log_tail (&srv));
      const char *e = pc_json_str (&r, "Err");
      cr_assert (r.status == 500 && e && strstr (e, "longer than"), "%s: %d %s", calls[i], r.status,
                 r.body ? r.body : "");
      pc_response_free (&r);
      cr_assert (pc_alive (&srv), "the server died: %s", pc_log_tail (&srv));
    }
  /* the Diff fails once its stream has begun: cut, without the final chunk */
  cr_assert_eq (
      pc_post (&srv, "/GraphDriver.Diff", "{\"ID\":\"dr-deep\",\"Parent\":\"" BASE "\"}", &r), 0,
      "Diff: no answer (the server died?): %s", pc_log_tail (&srv));
  cr_assert (r.status == 200 && !r.complete, "Diff: %d, %s", r.status,
             r.complete ? "complete" : "cut");
  pc_response_free (&r);
  cr_assert (pc_alive (&srv), "the server died: %s", pc_log_tail (&srv));
  cr_assert_eq (
      pc_post (&srv, "/GraphDriver.DiffSize", "{\"ID\":\"dr-within\",\"Parent\":\"" BASE "\"}", &r),
      0, "DiffSize: no answer: %s", pc_log_tail (&srv));
  cr_assert_eq (r.status, 200, "DiffSize of %d levels: %d %s", WITHIN_LEVELS, r.status,
                r.body ? r.body : "");
  pc_response_free (&r);
  cr_assert_eq (
      pc_post (&srv, "/GraphDriver.Diff", "{\"ID\":\"dr-within\",\"Parent\":\"" BASE "\"}", &r), 0,
      "Diff: no answer: %s", pc_log_tail (&srv));
  cr_assert (r.status == 200 && r.complete, "Diff of %d levels: %d, %s", WITHIN_LEVELS, r.status,
             r.complete ? "complete" : "cut");
  pc_response_free (&r);
  cr_assert (pc_alive (&srv), "the server died: %s", pc_log_tail (&srv));
  cr_assert_eq (pc_stop (&srv), 0, "the server did not exit cleanly: %s", pc_log_tail (&srv));
}
