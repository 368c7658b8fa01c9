/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Hostile clients against the real binary: cut bodies, binary noise, deeply nested and
   oversized JSON, a flood of connections past the server's cap, broken chunked
   encoding on ApplyDiff. After each, the server is still up, answers a normal Status
   with 200, and nothing under its Home changed (PROTOCOL.md §2.3, §4, Appendix B). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto_client.h"
#include "ustar.h"

static struct pc_server srv;

PC_SERVER_SUITE (hostile, srv);

/* BODY, then the server must exit 0 on SIGTERM (how a sanitizer build reports). */
#define HOSTILE_TEST(name)                                                                         \
  static void name##_body (void);                                                                  \
  Test (hostile, name)                                                                             \
  {                                                                                                \
    name##_body ();                                                                                \
    cr_assert_eq (pc_stop (&srv), 0, "the server did not exit cleanly on SIGTERM");                \
  }                                                                                                \
  static void name##_body (void)

/* ---- what must not change ------------------------------------------------------------ */

static char *listing;
static size_t listing_len;

static int
list_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  char line[PATH_MAX + 64];
  int n;

  (void)flag, (void)ftw;
  n = snprintf (line, sizeof line, "%s %o %lld\n", path, st->st_mode,
                S_ISDIR (st->st_mode) ? 0LL : (long long)st->st_size);
  listing = realloc (listing, listing_len + (size_t)n + 1);
  cr_assert_not_null (listing);
  memcpy (listing + listing_len, line, (size_t)n + 1);
  listing_len += (size_t)n;
  return 0;
}

/* "path mode size" of everything under Home. */
static char *
home_snapshot (void)
{
  listing = NULL;
  listing_len = 0;
  nftw (srv.home, list_entry, 32, FTW_PHYS);
  return listing ? listing : strdup ("");
}

/* The server is up and a normal Status answers 200 with a JSON object. */
static void
assert_serving (const char *after)
{
  struct pc_response r;

  cr_assert (pc_alive (&srv), "server died after %s\n%s", after, pc_log_tail (&srv));
  cr_assert_eq (pc_post (&srv, "/GraphDriver.Status", "{}\n", &r), 0,
                "Status after %s: no response\n%s", after, pc_log_tail (&srv));
  cr_assert_eq (r.status, 200, "Status after %s: %d %s", after, r.status, r.body ? r.body : "");
  json_t *j = pc_json (&r);
  cr_assert (json_is_object (j), "Status after %s: %s", after, r.body);
  json_decref (j);
  pc_response_free (&r);
}

static void
assert_home_unchanged (const char *before, const char *after_what)
{
  char *after = home_snapshot ();
  cr_assert_str_eq (after, before, "Home changed after %s", after_what);
  free (after);
}

/* Read until the server hangs up (or the safety timeout); the bytes are ignored. */
static void
drain (int fd)
{
  char buf[4096];
  while (read (fd, buf, sizeof buf) > 0)
    ;
}

/* Send the first LEN bytes of DATA, close our side, wait for the server to hang up. */
static void
send_and_hang_up (const void *data, size_t len)
{
  int fd = pc_connect (&srv);
  cr_assert_geq (fd, 0, "connect\n%s", pc_log_tail (&srv));
  /* the server may hang up first: a failed send is fine */
  (void)pc_send_all (fd, data, len);
  shutdown (fd, SHUT_WR);
  drain (fd);
  close (fd);
}

/* POST BODY (LEN bytes) to PATH and expect an error status with an answer, never 200. */
static void
post_expect_error (const char *path, const char *body, size_t len, const char *what)
{
  char head[512];
  struct pc_response r;
  int fd = pc_connect (&srv);

  cr_assert_geq (fd, 0);
  snprintf (head, sizeof head,
            "POST %s HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\n"
            "Content-Length: %zu\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\r\n",
            path, len);
  cr_assert_eq (pc_send_all (fd, head, strlen (head)), 0);
  /* the server may answer and close before taking all of an oversized body */
  (void)pc_send_all (fd, body, len);
  shutdown (fd, SHUT_WR);
  if (pc_read_response (fd, &r) == 0)
    {
      cr_assert_geq (r.status, 400, "%s: status %d, body %.200s", what, r.status,
                     r.body ? r.body : "");
      pc_response_free (&r);
    }
  close (fd);
}

/* ---- tests ----------------------------------------------------------------------------- */

HOSTILE_TEST (truncated_body_then_close)
{
  static const char *reqs[] = {
    /* Content-Length promises more than is sent */
    "POST /GraphDriver.Create HTTP/1.1\r\nHost: \r\nContent-Length: 1000\r\n\r\n{\"ID\":\"cut\"",
    "POST /GraphDriver.Init HTTP/1.1\r\nHost: \r\nContent-Length: 4096\r\n\r\n{\"Home\":\"/tmp/x",
    "POST /GraphDriver.ApplyDiff?id=cut&parent= HTTP/1.1\r\nHost: \r\n"
    "Content-Length: 1048576\r\n\r\nustar",
    "POST /GraphDriver.ApplyDiff?id=cut&parent= HTTP/1.1\r\nHost: \r\n"
    "Transfer-Encoding: chunked\r\n\r\n200\r\nabc",
    /* cut inside the headers */
    "POST /GraphDriver.Remove HTTP/1.1\r\nHost: \r\nContent-Le",
    "POST /GraphDr",
  };
  char *before = home_snapshot ();

  for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++)
    {
      send_and_hang_up (reqs[i], strlen (reqs[i]));
      assert_serving (reqs[i]);
    }
  assert_home_unchanged (before, "truncated requests");
  free (before);
}

HOSTILE_TEST (binary_noise_instead_of_http)
{
  char *before = home_snapshot ();
  size_t len = 256 * 1024;
  unsigned char *noise = malloc (len);
  unsigned state = 0x9e3779b9u;

  cr_assert_not_null (noise);
  for (size_t i = 0; i < len; i++)
    {
      state = state * 1103515245u + 12345u;
      noise[i] = (unsigned char)(state >> 16);
    }
  send_and_hang_up (noise, len);
  assert_serving ("binary noise");
  /* noise that starts like a request line */
  memcpy (noise, "POST /GraphDriver.Create HTTP/1.1\r\n", 35);
  send_and_hang_up (noise, len);
  assert_serving ("noise after a request line");
  /* NUL bytes and lone CR/LF */
  memset (noise, 0, 4096);
  send_and_hang_up (noise, 4096);
  memset (noise, '\n', 4096);
  send_and_hang_up (noise, 4096);
  assert_serving ("NUL and newline floods");
  free (noise);
  assert_home_unchanged (before, "binary noise");
  free (before);
}

HOSTILE_TEST (deeply_nested_json)
{
  static const char *paths[] = { "/GraphDriver.Create", "/GraphDriver.Init", "/GraphDriver.Status",
                                 "/GraphDriver.Remove" };
  size_t depth = 100000;
  char *before = home_snapshot ();
  char *body = malloc (2 * depth + 16);

  cr_assert_not_null (body);
  memset (body, '[', depth);
  for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++)
    {
      post_expect_error (paths[p], body, depth, "100k '['");
      assert_serving ("100k '['");
    }
  /* objects nested inside the ID's own object */
  size_t n = 0;
  n += (size_t)sprintf (body, "{\"ID\":\"deep\",\"StorageOpt\":");
  for (size_t i = 0; i < depth / 6; i++)
    n += (size_t)sprintf (body + n, "{\"a\":");
  post_expect_error ("/GraphDriver.Create", body, n, "nested objects");
  assert_serving ("nested objects");
  free (body);
  assert_home_unchanged (before, "deeply nested JSON");
  free (before);
}

HOSTILE_TEST (huge_json_body)
{
  size_t len = 3 * 1024 * 1024 / 2; /* 1.5 MiB: over the 1 MiB cap */
  char *before = home_snapshot ();
  char *body = malloc (len);

  cr_assert_not_null (body);
  /* a well-formed object, only too big */
  int head = sprintf (body, "{\"ID\":\"huge\",\"Pad\":\"");
  memset (body + head, 'x', len - (size_t)head - 2);
  memcpy (body + len - 2, "\"}", 2);
  post_expect_error ("/GraphDriver.Create", body, len, "1.5 MiB Create");
  assert_serving ("1.5 MiB Create");
  post_expect_error ("/GraphDriver.Init", body, len, "1.5 MiB Init");
  assert_serving ("1.5 MiB Init");
  /* and one that claims far more than it sends */
  char claim[256];
  snprintf (claim, sizeof claim,
            "POST /GraphDriver.Create HTTP/1.1\r\nHost: \r\nContent-Length: 99999999999\r\n\r\n");
  send_and_hang_up (claim, strlen (claim));
  assert_serving ("a 100 GB Content-Length");
  free (body);
  struct pc_response r;
  cr_assert_eq (pc_post (&srv, "/GraphDriver.Exists", "{\"ID\":\"huge\"}\n", &r), 0);
  cr_assert_eq (r.status, 200);
  cr_assert (strstr (r.body, "false") != NULL, "huge was created: %s", r.body);
  pc_response_free (&r);
  assert_home_unchanged (before, "huge JSON");
  free (before);
}

/* Threads of the server process (it runs one per connection). */
static int
server_threads (void)
{
  char path[64];
  int n = 0;
  struct dirent *de;

  snprintf (path, sizeof path, "/proc/%d/task", (int)srv.pid);
  DIR *d = opendir (path);
  cr_assert_not_null (d, "%s", path);
  while ((de = readdir (d)) != NULL)
    if (de->d_name[0] != '.')
      n++;
  closedir (d);
  return n;
}

HOSTILE_TEST (connection_flood)
{
  enum
  {
    FLOOD = 300
  };
  static const char partial[] = "POST /GraphDriver.Status HTTP/1.1\r\nHost: \r\n";
  int fds[FLOOD];
  int opened = 0;
  char *before = home_snapshot ();

  assert_serving ("start");
  int idle_threads = server_threads ();
  for (int i = 0; i < FLOOD; i++)
    {
      fds[i] = pc_connect (&srv);
      if (fds[i] < 0)
        continue; /* refused or backlog full: also a way of capping */
      opened++;
      /* a request begun and never finished holds its connection */
      (void)pc_send_all (fds[i], partial, sizeof partial - 1);
    }
  cr_assert_gt (opened, 0, "no connection at all");
  cr_assert (pc_alive (&srv), "server died in the flood\n%s", pc_log_tail (&srv));
  for (int i = 0; i < FLOOD; i++)
    if (fds[i] >= 0)
      close (fds[i]);
  /* every flood connection's thread goes away once it sees our close; then the cap
     has room again (no time limit: the suite's timeout catches a server that hangs) */
  while (server_threads () > idle_threads)
    usleep (10000);
  assert_serving ("a flood of 300 connections");
  assert_serving ("a flood of 300 connections (again)");
  assert_home_unchanged (before, "connection flood");
  free (before);
}

static void
call_status (const char *path, const char *body, int want)
{
  struct pc_response r;
  cr_assert_eq (pc_post (&srv, path, body, &r), 0, "%s: no response\n%s", path, pc_log_tail (&srv));
  cr_assert_eq (r.status, want, "%s %s: %d %s\n%s", path, body, r.status, r.body ? r.body : "",
                pc_log_tail (&srv));
  pc_response_free (&r);
}

/* Bad chunk framings sent after a valid tar header; each on its own connection. */
static const char *const bad_chunking[] = {
  "zz\r\nabc\r\n0\r\n\r\n",                 /* size not hex */
  "-1\r\nabc\r\n0\r\n\r\n",                 /* negative size */
  "ffffffffffffffffff\r\nabc\r\n0\r\n\r\n", /* size overflows */
  "3\r\nabcdef\r\n0\r\n\r\n",               /* more data than the size */
  "3\r\nabcXY0\r\n\r\n",                    /* no CRLF after the data */
  "3;"
  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" /* long ext */
  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\nabc\r\n",
  "400\r\nabc", /* cut inside a chunk */
};

static void
apply_bad_chunking (const char *id, const char *chunking)
{
  char head[512], tar[512], sz[16];
  int fd = pc_connect (&srv);

  cr_assert_geq (fd, 0);
  snprintf (head, sizeof head,
            "POST /GraphDriver.ApplyDiff?id=%s&parent= HTTP/1.1\r\nHost: \r\nUser-Agent: "
            "Go-http-client/1.1\r\nTransfer-Encoding: chunked\r\nAccept: "
            "application/vnd.docker.plugins.v1.2+json\r\n\r\n",
            id);
  tl_ustar_header (tar, "file", 100);
  snprintf (sz, sizeof sz, "%x\r\n", 512);
  (void)pc_send_all (fd, head, strlen (head));
  (void)pc_send_all (fd, sz, strlen (sz));
  (void)pc_send_all (fd, tar, sizeof tar);
  (void)pc_send_all (fd, "\r\n", 2);
  (void)pc_send_all (fd, chunking, strlen (chunking));
  shutdown (fd, SHUT_WR);
  struct pc_response r;
  if (pc_read_response (fd, &r) == 0)
    {
      cr_assert_neq (r.status, 200, "ApplyDiff with bad chunking %s succeeded: %s", chunking,
                     r.body);
      pc_response_free (&r);
    }
  close (fd);
}

HOSTILE_TEST (invalid_chunked_apply_diff_unknown_layer)
{
  char *before = home_snapshot ();

  for (size_t i = 0; i < sizeof bad_chunking / sizeof bad_chunking[0]; i++)
    {
      apply_bad_chunking ("nosuchlayer", bad_chunking[i]);
      assert_serving (bad_chunking[i]);
    }
  assert_home_unchanged (before, "bad chunking on an unknown layer");
  free (before);
}

HOSTILE_TEST (invalid_chunked_apply_diff_new_layer)
{
  char id[32], body[96];

  /* the first Create makes the shared template: do it before the snapshot */
  call_status ("/GraphDriver.Create", "{\"ID\":\"warmup\"}\n", 200);
  call_status ("/GraphDriver.Remove", "{\"ID\":\"warmup\"}\n", 200);
  char *before = home_snapshot ();
  for (size_t i = 0; i < sizeof bad_chunking / sizeof bad_chunking[0]; i++)
    {
      snprintf (id, sizeof id, "victim%zu", i);
      snprintf (body, sizeof body, "{\"ID\":\"%s\"}\n", id);
      call_status ("/GraphDriver.Create", body, 200);
      apply_bad_chunking (id, bad_chunking[i]);
      assert_serving (bad_chunking[i]);
      /* the cut apply left the layer unusable, never half-filled and usable */
      struct pc_response r;
      cr_assert_eq (pc_post (&srv, "/GraphDriver.Get", body, &r), 0);
      cr_assert_eq (r.status, 500, "Get of %s after a broken ApplyDiff: %d %s", id, r.status,
                    r.body);
      pc_response_free (&r);
      call_status ("/GraphDriver.Remove", body, 200);
    }
  assert_home_unchanged (before, "bad chunking on new layers, then Remove");
  free (before);
}
