/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Load against the real binary and user engine: 8 threads, each looping for
   PGD_STRESS_SECONDS (default 60) through Create (with and without a parent), Get,
   writes + fsync into the returned directory, Put, Remove, on layers of its own and on
   children of one layer every thread shares. Every call must answer 200 without an
   Err and every byte read back must be the one written. Afterwards nothing is left:
   the server's open fds are back to their baseline, and no loop device, mount, image
   server or layer directory of its Home remains. Needs root, FUSE and loop devices. */
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
#include <time.h>
#include <unistd.h>

#include "leaks.h"
#include "proto_client.h"

#define STRESS_THREADS 8
#define STRESS_DEFAULT_SECONDS 60
#define STRESS_FILES 4                   /* files written into every layer */
#define STRESS_FILE_SIZE (96 * 1024 + 5) /* spans clusters' pages, not page-aligned */
#define SHARED "stress-shared"           /* the parent every thread clones */
#define KEEP "stress-shared-keep"        /* a child that keeps SHARED's data shared */
#define ID_LEN 64
#define MSG_LEN 4096

static struct pc_server srv;
static atomic_bool stop_all;

/* One looping thread: its counters and its first error. */
struct worker
{
  pthread_t thread;
  int index;
  long long deadline_ms;
  unsigned iterations;
  unsigned long calls;
  char error[MSG_LEN];
};

static void
setup (void)
{
  signal (SIGPIPE, SIG_IGN);
  atomic_store (&stop_all, false);
  cr_assert_eq (pc_start (&srv, true), 0, "the server did not start");
}

static void
teardown (void)
{
  /* unmounts, kills image servers and removes the directory even after a failure */
  pc_stop (&srv);
}

TestSuite (stress, .init = setup, .fini = teardown);

static long long
now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Record W's first error (later ones are consequences) and stop every thread. */
#define fail(w, ...) pc_worker_fail ((w)->error, sizeof (w)->error, &stop_all, __VA_ARGS__)

/* POST BODY to PATH: 0 when the answer is 200, a JSON object without an Err, and the
   connection closed after it; the object goes to *OUT when OUT is not NULL. */
static int
call (struct worker *w, const char *path, const char *body, json_t **out)
{
  w->calls++;
  return pc_worker_call (&srv, w->error, sizeof w->error, &stop_all, true, path, body, out);
}

static int
id_call (struct worker *w, const char *path, const char *id)
{
  char body[ID_LEN + 32];

  snprintf (body, sizeof body, "{\"ID\":\"%s\"}\n", id);
  return call (w, path, body, NULL);
}

/* Create ID on PARENT (NULL: a base layer) through METHOD; the answer must be {}. */
static int
create (struct worker *w, const char *method, const char *id, const char *parent)
{
  char body[2 * ID_LEN + 64];
  json_t *j = NULL;
  int ret;

  if (parent)
    snprintf (body, sizeof body, "{\"ID\":\"%s\",\"Parent\":\"%s\",\"MountLabel\":\"\"}\n", id,
              parent);
  else
    snprintf (body, sizeof body, "{\"ID\":\"%s\",\"Parent\":\"\",\"MountLabel\":\"\"}\n", id);
  if (call (w, method, body, &j) < 0)
    return -1;
  ret = json_object_size (j) == 0 ? 0 : fail (w, "%s %s: the answer is not {}", method, id);
  json_decref (j);
  return ret;
}

/* Get ID: its Dir, which must be an existing absolute directory, into DIR. */
static int
get (struct worker *w, const char *id, char *dir)
{
  char body[ID_LEN + 48];
  json_t *j = NULL, *d;
  struct stat st;

  snprintf (body, sizeof body, "{\"ID\":\"%s\",\"MountLabel\":\"\"}\n", id);
  if (call (w, "/GraphDriver.Get", body, &j) < 0)
    return -1;
  d = json_object_get (j, "Dir");
  snprintf (dir, PATH_MAX, "%s", json_is_string (d) ? json_string_value (d) : "");
  json_decref (j);
  if (dir[0] != '/' || stat (dir, &st) < 0 || !S_ISDIR (st.st_mode))
    return fail (w, "Get %s: Dir \"%s\" is not an absolute directory", id, dir);
  return 0;
}

/* Exists ID must answer WANT. */
static int
exists_is (struct worker *w, const char *id, bool want)
{
  char body[ID_LEN + 32];
  json_t *j = NULL, *e;
  int ret;

  snprintf (body, sizeof body, "{\"ID\":\"%s\"}\n", id);
  if (call (w, "/GraphDriver.Exists", body, &j) < 0)
    return -1;
  e = json_object_get (j, "Exists");
  ret = json_is_boolean (e) && json_is_true (e) == want
            ? 0
            : fail (w, "Exists %s: expected %s", id, want ? "true" : "false");
  json_decref (j);
  return ret;
}

/* The content of file K of layer OWNER: bytes that differ per owner, file and offset. */
static void
fill (char *buf, const char *owner, int k)
{
  unsigned x = 2166136261u;

  for (const char *p = owner; *p; p++)
    x = (x ^ (unsigned char)*p) * 16777619u;
  x ^= (unsigned)k * 0x9e3779b9u;
  for (size_t i = 0; i < STRESS_FILE_SIZE; i++)
    {
      x ^= x << 13, x ^= x >> 17, x ^= x << 5;
      buf[i] = (char)x;
    }
}

/* Write OWNER's files into DIR, each fsync'ed, then fsync DIR. */
static int
write_files (struct worker *w, const char *dir, const char *owner)
{
  char path[PATH_MAX + ID_LEN + 16];
  char *buf = malloc (STRESS_FILE_SIZE);
  int ret = 0;

  if (buf == NULL)
    return fail (w, "out of memory");
  for (int k = 0; k < STRESS_FILES && ret == 0; k++)
    {
      snprintf (path, sizeof path, "%s/%s.%d", dir, owner, k);
      fill (buf, owner, k);
      int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0)
        {
          ret = fail (w, "create %s: %s", path, strerror (errno));
          break;
        }
      for (size_t done = 0; done < STRESS_FILE_SIZE && ret == 0;)
        {
          ssize_t n = write (fd, buf + done, STRESS_FILE_SIZE - done);
          if (n <= 0)
            ret = fail (w, "write %s: %s", path, n < 0 ? strerror (errno) : "short write");
          else
            done += (size_t)n;
        }
      if (ret == 0 && fsync (fd) < 0)
        ret = fail (w, "fsync %s: %s", path, strerror (errno));
      if (close (fd) < 0 && ret == 0)
        ret = fail (w, "close %s: %s", path, strerror (errno));
    }
  if (ret == 0)
    {
      int dfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd < 0 || fsync (dfd) < 0)
        ret = fail (w, "fsync %s: %s", dir, strerror (errno));
      if (dfd >= 0)
        close (dfd);
    }
  free (buf);
  return ret;
}

/* OWNER's files in DIR must hold exactly what write_files wrote. */
static int
check_files (struct worker *w, const char *dir, const char *owner)
{
  char path[PATH_MAX + ID_LEN + 16];
  char *want = malloc (STRESS_FILE_SIZE), *got = malloc (STRESS_FILE_SIZE + 1);
  int ret = 0;

  if (want == NULL || got == NULL)
    ret = fail (w, "out of memory");
  for (int k = 0; k < STRESS_FILES && ret == 0; k++)
    {
      size_t done = 0;
      snprintf (path, sizeof path, "%s/%s.%d", dir, owner, k);
      int fd = open (path, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        {
          ret = fail (w, "open %s: %s", path, strerror (errno));
          break;
        }
      for (;;) /* one byte more than expected: a longer file is wrong too */
        {
          ssize_t n = read (fd, got + done, STRESS_FILE_SIZE + 1 - done);
          if (n < 0)
            ret = fail (w, "read %s: %s", path, strerror (errno));
          if (n <= 0)
            break;
          done += (size_t)n;
          if (done == STRESS_FILE_SIZE + 1)
            break;
        }
      close (fd);
      fill (want, owner, k);
      if (ret == 0 && (done != STRESS_FILE_SIZE || memcmp (got, want, done) != 0))
        ret = fail (w, "%s: %zu bytes read back, not the %d written", path, done, STRESS_FILE_SIZE);
    }
  free (want);
  free (got);
  return ret;
}

/* One round of W: a base layer, a read-write child of it, a child of SHARED made
   while SHARED is mounted read-only, everything written, read back and removed. */
static int
iteration (struct worker *w)
{
  char base[ID_LEN], child[ID_LEN], leaf[ID_LEN], dir[PATH_MAX], shared_dir[PATH_MAX];
  unsigned i = w->iterations;

  snprintf (base, sizeof base, "stress-%d-%u-base", w->index, i);
  snprintf (child, sizeof child, "stress-%d-%u-child", w->index, i);
  snprintf (leaf, sizeof leaf, "stress-%d-%u-leaf", w->index, i);

  /* a base layer, written through Get; dockerd puts a parent before cloning it */
  if (create (w, "/GraphDriver.Create", base, NULL) < 0 || get (w, base, dir) < 0
      || write_files (w, dir, base) < 0 || id_call (w, "/GraphDriver.Put", base) < 0)
    return -1;
  /* a container-like child: sees the base's files, adds its own */
  if (create (w, "/GraphDriver.CreateReadWrite", child, base) < 0 || get (w, child, dir) < 0
      || check_files (w, dir, base) < 0 || write_files (w, dir, child) < 0
      || check_files (w, dir, child) < 0 || id_call (w, "/GraphDriver.Put", child) < 0)
    return -1;
  /* the shared parent: the other threads mount and clone it at the same time */
  if (get (w, SHARED, shared_dir) < 0 || check_files (w, shared_dir, SHARED) < 0
      || create (w, "/GraphDriver.Create", leaf, SHARED) < 0
      || id_call (w, "/GraphDriver.Put", SHARED) < 0 || get (w, leaf, dir) < 0
      || check_files (w, dir, SHARED) < 0 || write_files (w, dir, leaf) < 0
      || id_call (w, "/GraphDriver.Put", leaf) < 0)
    return -1;
  /* children first, as dockerd removes them */
  if (id_call (w, "/GraphDriver.Remove", leaf) < 0 || id_call (w, "/GraphDriver.Remove", child) < 0
      || id_call (w, "/GraphDriver.Remove", base) < 0 || exists_is (w, base, false) < 0
      || exists_is (w, child, false) < 0 || exists_is (w, leaf, false) < 0)
    return -1;
  return 0;
}

static void *
worker_main (void *arg)
{
  struct worker *w = arg;

  while (!atomic_load (&stop_all) && now_ms () < w->deadline_ms)
    {
      if (iteration (w) < 0)
        break;
      w->iterations++;
    }
  return NULL;
}

static long
stress_seconds (void)
{
  const char *s = getenv ("PGD_STRESS_SECONDS");
  char *end;
  long v;

  if (s == NULL || *s == '\0')
    return STRESS_DEFAULT_SECONDS;
  errno = 0;
  v = strtol (s, &end, 10);
  cr_assert (errno == 0 && *end == '\0' && v > 0, "PGD_STRESS_SECONDS=%s: not a positive number",
             s);
  return v;
}

/* The server's fd count once idle: the lowest of a few samples, since a connection's
   socket may still be closing for an instant after its answer was read. */
static int
idle_fd_count (void)
{
  int low = lk_fd_count (srv.pid);

  for (int i = 0; i < 20; i++)
    {
      struct timespec ts = { 0, 50 * 1000000L };
      nanosleep (&ts, NULL);
      int n = lk_fd_count (srv.pid);
      if (n >= 0 && n < low)
        low = n;
    }
  return low;
}

/* Wait (bounded by the safety timeout, never a performance limit) until the server's
   fd count is back to BASELINE; returns the last count seen. */
static int
fds_back_to (int baseline, long long *waited_ms)
{
  long long t0 = now_ms ();
  int n;

  while ((n = lk_fd_count (srv.pid)) != baseline && now_ms () - t0 < PC_SAFETY_MS)
    {
      struct timespec ts = { 0, 20 * 1000000L };
      nanosleep (&ts, NULL);
    }
  *waited_ms = now_ms () - t0;
  return n;
}

/* Main-thread versions of the calls: any failure fails the test. */
static void
must (int rc, struct worker *w)
{
  cr_assert_eq (rc, 0, "%s\n%s", w->error, pc_log_tail (&srv));
}

Test (stress, eight_loops_of_create_get_write_put_remove)
{
  static struct worker workers[STRESS_THREADS];
  static char msg[65536];
  struct worker m = { .index = -1 };
  char dir[PATH_MAX], sub[PATH_MAX + 16];
  long seconds = stress_seconds ();
  const char *const servers[] = { "serve-image", srv.dir, NULL };
  const char *const subdirs[] = { "layers", "mnt", "run" };
  int baseline, fds;
  long long t0, waited;
  unsigned long calls = 0;
  unsigned total = 0;

  baseline = idle_fd_count ();
  cr_assert_gt (baseline, 0, "cannot count the server's fds");
  lk_fd_list (srv.pid, msg, sizeof msg);
  fprintf (stderr, "stress: server fds at start: %d\n%s", baseline, msg);

  /* the shared parent, with a child that keeps its data shared (so every later
     mount of it is read-only, and cloning it while mounted is allowed) */
  must (create (&m, "/GraphDriver.Create", SHARED, NULL), &m);
  must (get (&m, SHARED, dir), &m);
  must (write_files (&m, dir, SHARED), &m);
  /* the probes see a mounted layer: their zeros at the end mean something */
  cr_assert_geq (lk_loops_under (srv.dir, msg, sizeof msg), 1, "no loop device seen");
  cr_assert_geq (lk_mounts_under (srv.dir, msg, sizeof msg), 2, "no FUSE + ext4 mounts seen");
  cr_assert_eq (lk_procs_matching (srv.pid, msg, sizeof msg, servers), 1, "image servers: %s", msg);
  snprintf (sub, sizeof sub, "%s/layers", srv.home);
  cr_assert_eq (lk_dir_entries (sub, SHARED, msg, sizeof msg), 1, "layers/: %s", msg);
  must (id_call (&m, "/GraphDriver.Put", SHARED), &m);
  must (create (&m, "/GraphDriver.CreateReadWrite", KEEP, SHARED), &m);

  t0 = now_ms ();
  for (int i = 0; i < STRESS_THREADS; i++)
    {
      workers[i] = (struct worker){ .index = i, .deadline_ms = t0 + seconds * 1000 };
      cr_assert_eq (pthread_create (&workers[i].thread, NULL, worker_main, &workers[i]), 0);
    }
  for (int i = 0; i < STRESS_THREADS; i++)
    pthread_join (workers[i].thread, NULL);
  for (int i = 0; i < STRESS_THREADS; i++)
    {
      fprintf (stderr, "stress: thread %d: %u iterations, %lu calls%s%s\n", i,
               workers[i].iterations, workers[i].calls, workers[i].error[0] ? ": " : "",
               workers[i].error);
      calls += workers[i].calls;
      total += workers[i].iterations;
    }
  fprintf (stderr, "stress: %d threads, %ld s asked, %lld ms run, %u iterations, %lu calls\n",
           STRESS_THREADS, seconds, now_ms () - t0, total, calls);
  for (int i = 0; i < STRESS_THREADS; i++)
    cr_assert_eq (workers[i].error[0], '\0', "thread %d failed: %s\n%s", i, workers[i].error,
                  pc_log_tail (&srv));
  for (int i = 0; i < STRESS_THREADS; i++)
    cr_assert_geq (workers[i].iterations, 1, "thread %d never completed an iteration", i);
  cr_assert (pc_alive (&srv), "the server died\n%s", pc_log_tail (&srv));

  must (id_call (&m, "/GraphDriver.Remove", KEEP), &m);
  must (id_call (&m, "/GraphDriver.Remove", SHARED), &m);

  /* nothing left behind */
  fds = fds_back_to (baseline, &waited);
  lk_fd_list (srv.pid, msg, sizeof msg);
  cr_assert_eq (fds, baseline, "server fds: %d at start, %d after the run:\n%s", baseline, fds,
                msg);
  fprintf (stderr, "stress: server fds after the run: %d (baseline %d, settled in %lld ms)\n", fds,
           baseline, waited);
  cr_assert_eq (lk_loops_under (srv.dir, msg, sizeof msg), 0, "loop devices left: %s", msg);
  cr_assert_eq (lk_mounts_under (srv.dir, msg, sizeof msg), 0, "mounts left: %s", msg);
  cr_assert_eq (lk_procs_matching (srv.pid, msg, sizeof msg, servers), 0, "image servers left:\n%s",
                msg);
  for (size_t i = 0; i < sizeof subdirs / sizeof *subdirs; i++)
    {
      snprintf (sub, sizeof sub, "%s/%s", srv.home, subdirs[i]);
      cr_assert_eq (lk_dir_entries (sub, "", msg, sizeof msg), 0, "%s is not empty: %s", sub, msg);
    }
  /* staging: nothing of the test's layers (the base template's own leftovers are not
     the layers' and are swept at the next start) */
  snprintf (sub, sizeof sub, "%s/staging", srv.home);
  cr_assert_eq (lk_dir_entries (sub, "stress-", msg, sizeof msg), 0, "%s holds %s", sub, msg);
  lk_dir_entries (sub, "", msg, sizeof msg);
  fprintf (stderr, "stress: left in staging/: %s\n", msg[0] ? msg : "nothing");
  cr_assert_eq (pc_stop (&srv), 0, "the server did not exit cleanly on SIGTERM");
}
