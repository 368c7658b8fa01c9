/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The protocol face over the socket, against the real binary: requests as dockerd
   20.10.24 sends them, response rules, bad input, body draining, shutdown
   (PROTOCOL.md §2-§4, §11.3 "Requests accepted", "Responses", "Restart and shutdown"). */
#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto_client.h"

static struct pc_server srv;

PC_SERVER_SUITE (protocol, srv);

/* A test of this suite: BODY, then the server must exit 0 on SIGTERM, which is also how
   a sanitizer build of it reports leaks and errors (a failed check in .fini would not
   count in Criterion 2.4, so it is done here). */
#define PROTOCOL_TEST(name)                                                                        \
  static void name##_body (void);                                                                  \
  Test (protocol, name)                                                                            \
  {                                                                                                \
    name##_body ();                                                                                \
    cr_assert_eq (pc_stop (&srv), 0, "the server did not exit cleanly on SIGTERM");                \
  }                                                                                                \
  static void name##_body (void)

/* 200, a non-empty JSON object body, Connection: close, and the server hung up. */
static json_t *
assert_ok (struct pc_response *r, const char *what)
{
  const char *conn = pc_header (r, "Connection");
  json_t *j;

  cr_assert_eq (r->status, 200, "%s: status %d, body %s\n%s", what, r->status,
                r->body ? r->body : "", pc_log_tail (&srv));
  cr_assert (conn && strcasecmp (conn, "close") == 0, "%s: Connection: close missing", what);
  cr_assert (r->complete && r->closed, "%s: body complete and connection closed", what);
  cr_assert_gt (r->body_len, 0, "%s: success needs a non-empty body", what);
  j = pc_json (r);
  cr_assert (json_is_object (j), "%s: body is not a JSON object: %s", what, r->body);
  return j;
}

/* STATUS with {"Err": non-empty string containing WANT}, Connection: close. */
static void
assert_err (struct pc_response *r, int status, const char *want, const char *what)
{
  const char *conn = pc_header (r, "Connection");
  const char *msg = pc_json_str (r, "Err");

  cr_assert_eq (r->status, status, "%s: status %d (want %d), body %s", what, r->status, status,
                r->body ? r->body : "");
  cr_assert (conn && strcasecmp (conn, "close") == 0, "%s: Connection: close missing", what);
  cr_assert (r->complete && r->closed, "%s: body complete and connection closed", what);
  cr_assert (msg != NULL && msg[0] != '\0', "%s: no Err string in %s", what, r->body);
  cr_assert (want == NULL || strstr (msg, want) != NULL, "%s: Err \"%s\" lacks \"%s\"", what, msg,
             want);
}

static void
post (const char *path, const char *body, struct pc_response *r)
{
  cr_assert_eq (pc_post (&srv, path, body, r), 0, "POST %s: no response\n%s", path,
                pc_log_tail (&srv));
}

static void
raw (const char *req, struct pc_response *r)
{
  cr_assert_eq (pc_roundtrip (&srv, req, strlen (req), r), 0, "no response to %.60s\n%s", req,
                pc_log_tail (&srv));
}

PROTOCOL_TEST (activate_exact_answer)
{
  struct pc_response r;

  /* byte for byte what dockerd sends (PROTOCOL.md Appendix A) */
  raw ("POST /Plugin.Activate HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\n"
       "Content-Length: 0\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\r\n",
       &r);
  json_decref (assert_ok (&r, "Activate"));
  cr_assert_str_eq (r.body, "{\"Implements\":[\"GraphDriver\"]}");
  cr_assert_str_eq (pc_header (&r, "Content-Type"), "application/vnd.docker.plugins.v1+json");
  pc_response_free (&r);
}

PROTOCOL_TEST (capabilities_nested_and_false)
{
  struct pc_response r;

  post ("/GraphDriver.Capabilities", "{}\n", &r);
  json_t *j = assert_ok (&r, "Capabilities");
  json_t *caps = json_object_get (j, "Capabilities");
  cr_assert (json_is_object (caps), "Capabilities must be nested: %s", r.body);
  cr_assert (json_is_false (json_object_get (caps, "ReproducesExactDiffs")), "%s", r.body);
  cr_assert_null (json_object_get (j, "ReproducesExactDiffs"), "not at top level");
  cr_assert_str_eq (r.body, "{\"Capabilities\":{\"ReproducesExactDiffs\":false}}");
  json_decref (j);
  pc_response_free (&r);
}

PROTOCOL_TEST (any_host_header_accepted)
{
  const char *reqs[] = {
    "POST /GraphDriver.Capabilities HTTP/1.1\r\nHost: \r\nContent-Length: 3\r\n\r\n{}\n",
    "POST /GraphDriver.Capabilities HTTP/1.1\r\nHost: plugin.moby.localhost\r\n"
    "Content-Length: 3\r\n\r\n{}\n",
    "POST /GraphDriver.Capabilities HTTP/1.1\r\nContent-Length: 3\r\n\r\n{}\n",
  };

  for (size_t i = 0; i < 3; i++)
    {
      struct pc_response r;
      raw (reqs[i], &r);
      json_decref (assert_ok (&r, reqs[i]));
      pc_response_free (&r);
    }
}

PROTOCOL_TEST (no_content_type_and_v12_accept)
{
  struct pc_response r;

  raw ("POST /GraphDriver.Capabilities HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\n"
       "Content-Length: 3\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\r\n{}\n",
       &r);
  json_decref (assert_ok (&r, "Capabilities as dockerd sends it"));
  pc_response_free (&r);
}

PROTOCOL_TEST (init_with_nulls)
{
  char body[PATH_MAX + 128];
  struct pc_response r;

  snprintf (body, sizeof body,
            "{\"Home\":\"%s\",\"Opts\":null,\"UIDMaps\":null,\"GIDMaps\":null}\n", srv.home);
  post ("/GraphDriver.Init", body, &r);
  json_decref (assert_ok (&r, "Init with nulls"));
  cr_assert_str_eq (r.body, "{}");
  pc_response_free (&r);
}

PROTOCOL_TEST (init_with_empty_arrays)
{
  char body[PATH_MAX + 128];
  struct pc_response r;

  snprintf (body, sizeof body, "{\"Home\":\"%s\",\"Opts\":[],\"UIDMaps\":[],\"GIDMaps\":[]}\n",
            srv.home);
  post ("/GraphDriver.Init", body, &r);
  json_decref (assert_ok (&r, "Init with []"));
  cr_assert_str_eq (r.body, "{}");
  pc_response_free (&r);
}

PROTOCOL_TEST (trailing_newline_and_absent_parent)
{
  struct pc_response r;

  post ("/GraphDriver.Exists", "{\"ID\":\"0123456789abcdef\"}\n", &r);
  json_t *j = assert_ok (&r, "Exists");
  cr_assert (json_is_false (json_object_get (j, "Exists")), "unknown layer: %s", r.body);
  json_decref (j);
  pc_response_free (&r);
}

PROTOCOL_TEST (status_is_pairs_of_strings)
{
  struct pc_response r;
  size_t i;
  json_t *pair;

  post ("/GraphDriver.Status", "{}\n", &r);
  json_t *j = assert_ok (&r, "Status");
  json_t *st = json_object_get (j, "Status");
  cr_assert (json_is_array (st), "Status must be an array: %s", r.body);
  json_array_foreach (st, i, pair)
  {
    cr_assert (json_is_array (pair) && json_array_size (pair) == 2, "%s", r.body);
    cr_assert (json_is_string (json_array_get (pair, 0)), "%s", r.body);
    cr_assert (json_is_string (json_array_get (pair, 1)), "%s", r.body);
  }
  json_decref (j);
  pc_response_free (&r);
}

PROTOCOL_TEST (unknown_paths_get_404)
{
  const char *paths[] = { "/GraphDriver.Nope",    "/",
                          "/Plugin.Activate/x",   "/graphdriver.create",
                          "/VolumeDriver.Create", "/GraphDriver.Create/" };

  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
    {
      struct pc_response r;
      post (paths[i], "{\"ID\":\"a\"}\n", &r);
      assert_err (&r, 404, NULL, paths[i]);
      pc_response_free (&r);
    }
}

PROTOCOL_TEST (non_post_rejected)
{
  const char *reqs[] = {
    "GET /GraphDriver.Capabilities HTTP/1.1\r\nHost: \r\n\r\n",
    "PUT /GraphDriver.Create HTTP/1.1\r\nHost: \r\nContent-Length: 10\r\n\r\n{\"ID\":\"a\"}",
    "DELETE /GraphDriver.Remove HTTP/1.1\r\nHost: \r\nContent-Length: 10\r\n\r\n{\"ID\":\"a\"}",
    "GET /Plugin.Activate HTTP/1.1\r\nHost: \r\n\r\n",
  };

  for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++)
    {
      struct pc_response r;
      raw (reqs[i], &r);
      assert_err (&r, 405, "POST", reqs[i]);
      cr_assert_str_eq (pc_header (&r, "Allow"), "POST");
      pc_response_free (&r);
    }
}

/* A listing of everything under the server's directory but its log: "path type size". */
static char *listing;
static size_t listing_len;

static int
list_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  char line[PATH_MAX + 64];
  int n;

  (void)flag, (void)ftw;
  if (strstr (path, "server.log") != NULL)
    return 0;
  n = snprintf (line, sizeof line, "%s %o %lld\n", path, st->st_mode,
                S_ISDIR (st->st_mode) ? 0LL : (long long)st->st_size);
  listing = realloc (listing, listing_len + (size_t)n + 1);
  memcpy (listing + listing_len, line, (size_t)n + 1);
  listing_len += (size_t)n;
  return 0;
}

static char *
snapshot (void)
{
  listing = NULL;
  listing_len = 0;
  nftw (srv.dir, list_entry, 32, FTW_PHYS);
  return listing ? listing : strdup ("");
}

PROTOCOL_TEST (bad_input_rejected_and_nothing_changes)
{
  static const struct
  {
    const char *body;
    const char *want;
  } bad[] = {
    { "", "empty request body" },
    { "[]", "not a JSON object" },
    { "\"abc\"", "not a JSON object" },
    { "42", "not a JSON object" },
    { "{\"ID\":", "not valid JSON" },
    { "{}\n", "missing ID" },
    { "{\"ID\":\"\"}\n", "empty" },
    { "{\"ID\":5}\n", "not a string" },
    { "{\"ID\":\"a/b\"}\n", "invalid ID" },
    { "{\"ID\":\"..\"}\n", "invalid ID" },
    { "{\"ID\":\".\"}\n", "invalid ID" },
    { "{\"ID\":\"/\"}\n", "invalid ID" },
    { "{\"ID\":\"ok\",\"Parent\":\"../x\"}\n", "Parent" },
    { "{\"ID\":\"ok\",\"StorageOpt\":[\"size=1G\"]}\n", "StorageOpt" },
  };
  const char *paths[] = { "/GraphDriver.Create",      "/GraphDriver.CreateReadWrite",
                          "/GraphDriver.Remove",      "/GraphDriver.Get",
                          "/GraphDriver.Put",         "/GraphDriver.Diff",
                          "/GraphDriver.Changes",     "/GraphDriver.DiffSize",
                          "/GraphDriver.GetMetadata", "/GraphDriver.Exists" };
  char *before = snapshot ();

  for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++)
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
      {
        struct pc_response r;
        char what[256];
        snprintf (what, sizeof what, "%s %s", paths[p], bad[i].body);
        post (paths[p], bad[i].body, &r);
        assert_err (&r, 500, bad[i].want, what);
        pc_response_free (&r);
      }
  char *after = snapshot ();
  cr_assert_str_eq (after, before, "rejected requests changed files on disk");
  free (before);
  free (after);
}

PROTOCOL_TEST (bad_init_rejected)
{
  struct pc_response r;

  post ("/GraphDriver.Init", "", &r);
  assert_err (&r, 500, "empty request body", "Init without body");
  pc_response_free (&r);
  post ("/GraphDriver.Init", "{\"Opts\":null}\n", &r);
  assert_err (&r, 500, "Home", "Init without Home");
  pc_response_free (&r);
  post ("/GraphDriver.Init", "{\"Home\":\"/x\",\"UIDMaps\":[{\"ContainerID\":0}]}\n", &r);
  assert_err (&r, 500, "container_id", "Init with CamelCase maps");
  pc_response_free (&r);
}

PROTOCOL_TEST (arguments_free_calls_need_a_json_object)
{
  const char *paths[]
      = { "/GraphDriver.Status", "/GraphDriver.Capabilities", "/GraphDriver.Cleanup" };

  for (size_t i = 0; i < 3; i++)
    {
      struct pc_response r;
      post (paths[i], "", &r);
      assert_err (&r, 500, "empty request body", paths[i]);
      pc_response_free (&r);
    }
}

/* Capabilities still answers: the server survived whatever came before. */
static void
assert_still_serving (void)
{
  struct pc_response r;

  cr_assert (pc_alive (&srv), "the server died:\n%s", pc_log_tail (&srv));
  post ("/GraphDriver.Capabilities", "{}\n", &r);
  json_decref (assert_ok (&r, "Capabilities afterwards"));
  pc_response_free (&r);
}

PROTOCOL_TEST (oversized_body_drained_then_rejected)
{
  size_t len = 2 * 1024 * 1024 + 17;
  char *body = malloc (len + 1);
  char head[256];
  struct pc_response r;
  int fd;

  memset (body, ' ', len);
  memcpy (body, "{\"ID\":\"a\",\"Pad\":\"", 17);
  memcpy (body + len - 3, "\"}\n", 3);
  body[len] = '\0';
  fd = pc_connect (&srv);
  cr_assert_geq (fd, 0);
  snprintf (head, sizeof head,
            "POST /GraphDriver.Create HTTP/1.1\r\nHost: \r\nContent-Length: %zu\r\n\r\n", len);
  cr_assert_eq (pc_send_all (fd, head, strlen (head)), 0);
  /* the server reads it all before answering: every byte goes through */
  cr_assert_eq (pc_send_all (fd, body, len), 0, "the server stopped reading the body");
  cr_assert_eq (pc_read_response (fd, &r), 0, "no answer to the oversized body");
  assert_err (&r, 500, "too large", "oversized body");
  pc_response_free (&r);
  close (fd);
  free (body);
  assert_still_serving ();
}

PROTOCOL_TEST (short_body_then_hangup_is_harmless)
{
  const char *partial[] = {
    "POST /GraphDriver.Create HTTP/1.1\r\nHost: \r\nContent-Length: 100\r\n\r\n{\"ID\":",
    "POST /GraphDriver.Create HTTP/1.1\r\nHost: \r\nContent-Length: 100\r\n\r\n",
    "POST /GraphDriver.Init HTTP/1.1\r\nHost: \r\nContent-Le",
    "POST /GraphDriver.ApplyDiff?id=x&parent= HTTP/1.1\r\nHost: \r\n"
    "Transfer-Encoding: chunked\r\n\r\n200\r\n",
  };

  for (size_t i = 0; i < sizeof partial / sizeof partial[0]; i++)
    {
      int fd = pc_connect (&srv);
      cr_assert_geq (fd, 0);
      cr_assert_eq (pc_send_all (fd, partial[i], strlen (partial[i])), 0);
      shutdown (fd, SHUT_WR);
      close (fd);
    }
  assert_still_serving ();
}

/* Send the ApplyDiff of ID as a chunked body of SIZES-long pieces of a 2 KiB pattern. */
static void
applydiff_chunked (const char *query, const size_t *sizes, size_t n, struct pc_response *r)
{
  char head[512];
  char data[4096];
  int fd = pc_connect (&srv);

  cr_assert_geq (fd, 0);
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (char)('a' + i % 26);
  snprintf (head, sizeof head,
            "POST /GraphDriver.ApplyDiff?%s HTTP/1.1\r\nHost: \r\nUser-Agent: "
            "Go-http-client/1.1\r\nTransfer-Encoding: chunked\r\nAccept: "
            "application/vnd.docker.plugins.v1.2+json\r\n\r\n",
            query);
  cr_assert_eq (pc_send_all (fd, head, strlen (head)), 0);
  for (int round = 0; round < 40; round++)
    for (size_t i = 0; i < n; i++)
      cr_assert_eq (pc_send_chunk (fd, data, sizes[i]), 0, "chunk %zu of round %d refused", i,
                    round);
  cr_assert_eq (pc_send_chunk (fd, NULL, 0), 0, "final chunk refused");
  cr_assert_eq (pc_read_response (fd, r), 0, "no answer to ApplyDiff");
  close (fd);
}

PROTOCOL_TEST (applydiff_bad_id_drains_odd_chunks)
{
  static const size_t sizes[] = { 512, 27, 485, 512, 512, 28, 1, 3, 7, 4093, 511, 2 };
  struct pc_response r;

  applydiff_chunked ("id=..&parent=", sizes, sizeof sizes / sizeof sizes[0], &r);
  assert_err (&r, 500, "invalid ID", "ApplyDiff id=..");
  pc_response_free (&r);
  applydiff_chunked ("id=a&parent=a/b", sizes, sizeof sizes / sizeof sizes[0], &r);
  assert_err (&r, 500, "parent", "ApplyDiff parent=a/b");
  pc_response_free (&r);
  applydiff_chunked ("parent=", sizes, sizeof sizes / sizeof sizes[0], &r);
  assert_err (&r, 500, "missing id", "ApplyDiff without id");
  pc_response_free (&r);
  assert_still_serving ();
}

PROTOCOL_TEST (applydiff_unknown_layer_drains_and_fails)
{
  static const size_t sizes[] = { 512, 512, 27, 485, 1000, 13 };
  struct pc_response r;

  /* not a tar either: whatever the driver says, the whole upload is read first */
  applydiff_chunked ("id=no-such-layer&parent=", sizes, sizeof sizes / sizeof sizes[0], &r);
  assert_err (&r, 500, NULL, "ApplyDiff of an unknown layer");
  pc_response_free (&r);
  assert_still_serving ();
}

PROTOCOL_TEST (connections_are_served_concurrently)
{
  static const char head[]
      = "POST /GraphDriver.Create HTTP/1.1\r\nHost: \r\nContent-Length: 12\r\n\r\n{\"ID\":";
  struct pc_response r;
  int a = pc_connect (&srv);

  cr_assert_geq (a, 0);
  cr_assert_eq (pc_send_all (a, head, sizeof head - 1), 0);
  /* A waits for the rest of its body; B must not wait for A */
  post ("/GraphDriver.Capabilities", "{}\n", &r);
  json_decref (assert_ok (&r, "Capabilities beside a stalled request"));
  pc_response_free (&r);
  cr_assert_eq (pc_send_all (a, "\"../\"}", 6), 0);
  cr_assert_eq (pc_read_response (a, &r), 0);
  assert_err (&r, 500, "invalid ID", "the stalled request, completed");
  pc_response_free (&r);
  close (a);
}

PROTOCOL_TEST (socket_is_private)
{
  struct stat st;

  cr_assert_eq (stat (srv.socket, &st), 0);
  cr_assert (S_ISSOCK (st.st_mode));
  cr_assert_eq (st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
}

static void
assert_clean_exit (int sig)
{
  int status = 0;

  cr_assert_eq (pc_signal_and_wait (&srv, sig, PC_SAFETY_MS, &status), 0,
                "signal %d: the server did not exit\n%s", sig, pc_log_tail (&srv));
  cr_assert (WIFEXITED (status), "killed by signal %d instead of exiting",
             WIFSIGNALED (status) ? WTERMSIG (status) : 0);
  cr_assert_eq (WEXITSTATUS (status), 0, "exit status %d\n%s", WEXITSTATUS (status),
                pc_log_tail (&srv));
  /* a clean exit takes its own socket file away: no stale path for clients to find */
  cr_assert (access (srv.socket, F_OK) < 0 && errno == ENOENT,
             "signal %d: the socket file %s stayed after a clean exit", sig, srv.socket);
}

PROTOCOL_TEST (sigterm_exits) { assert_clean_exit (SIGTERM); }

PROTOCOL_TEST (sigint_exits) { assert_clean_exit (SIGINT); }

PROTOCOL_TEST (sigterm_exits_with_clients_connected)
{
  static const char partial[]
      = "POST /GraphDriver.Create HTTP/1.1\r\nHost: \r\nContent-Length: 50\r\n\r\n{";
  int idle = pc_connect (&srv);
  int stalled = pc_connect (&srv);

  cr_assert_geq (idle, 0);
  cr_assert_geq (stalled, 0);
  cr_assert_eq (pc_send_all (stalled, partial, sizeof partial - 1), 0);
  assert_still_serving ();
  assert_clean_exit (SIGTERM);
  close (idle);
  close (stalled);
}

PROTOCOL_TEST (restart_replaces_stale_socket)
{
  int status;

  /* SIGKILL leaves the socket file behind, as a crash would */
  cr_assert_eq (pc_signal_and_wait (&srv, SIGKILL, PC_SAFETY_MS, &status), 0);
  cr_assert_eq (access (srv.socket, F_OK), 0, "the socket file should still be there");
  cr_assert_eq (pc_spawn (&srv, true), 0, "restart over a stale socket failed");
  assert_still_serving ();
}

PROTOCOL_TEST (second_instance_refuses_live_socket)
{
  char bin[PATH_MAX], cmd[4 * PATH_MAX], log[PATH_MAX + 16];
  FILE *f;
  char out[4096];
  size_t n;

  cr_assert_eq (pc_binary (bin), 0);
  snprintf (log, sizeof log, "%s/second.log", srv.dir);
  /* timeout(1) only bounds a broken build that would serve forever */
  snprintf (cmd, sizeof cmd, "timeout %d '%s' --socket '%s' --state '%s/second.json' 2>'%s'",
            PC_SAFETY_MS / 1000, bin, srv.socket, srv.dir, log);
  int st = system (cmd);
  cr_assert (WIFEXITED (st) && WEXITSTATUS (st) == 1, "second instance: status %d", st);
  f = fopen (log, "r");
  cr_assert_not_null (f);
  n = fread (out, 1, sizeof out - 1, f);
  out[n] = '\0';
  fclose (f);
  cr_assert (strstr (out, "another server is listening") != NULL, "log: %s", out);
  assert_still_serving ();
}

PROTOCOL_TEST (systemd_socket_activation)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  char path[PATH_MAX], unused[PATH_MAX];
  int status, fd;

  cr_assert_eq (pc_signal_and_wait (&srv, SIGTERM, PC_SAFETY_MS, &status), 0);
  unlink (srv.socket);
  snprintf (path, sizeof path, "%s/activated.sock", srv.dir);
  snprintf (unused, sizeof unused, "%s", srv.socket);
  fd = socket (AF_UNIX, SOCK_STREAM, 0);
  snprintf (sa.sun_path, sizeof sa.sun_path, "%s", path);
  cr_assert_eq (bind (fd, (struct sockaddr *)&sa, sizeof sa), 0);
  cr_assert_eq (listen (fd, 16), 0);
  cr_assert_eq (pc_spawn_activated (&srv, true, fd, path), 0, "activated start failed");
  close (fd);
  assert_still_serving ();
  cr_assert_neq (access (unused, F_OK), 0, "--socket must be ignored when socket-activated");
  /* systemd owns the activated socket (and may start us again on it): it stays */
  cr_assert_eq (pc_signal_and_wait (&srv, SIGTERM, PC_SAFETY_MS, &status), 0);
  cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "status %d", status);
  cr_assert_eq (access (path, F_OK), 0, "the systemd-activated socket %s was removed", path);
}

PROTOCOL_TEST (command_line)
{
  char bin[PATH_MAX], cmd[PATH_MAX + 64], out[4096];
  FILE *p;
  size_t n;

  cr_assert_eq (pc_binary (bin), 0);
  snprintf (cmd, sizeof cmd, "'%s' --help", bin);
  p = popen (cmd, "r");
  n = fread (out, 1, sizeof out - 1, p);
  out[n] = '\0';
  cr_assert_eq (pclose (p), 0, "--help must succeed");
  cr_assert (strstr (out, "--socket") && strstr (out, "--state") && strstr (out, "--home")
                 && strstr (out, "--engine") && strstr (out, "--log-level"),
             "help text: %s", out);
  snprintf (cmd, sizeof cmd, "'%s' --log-level loud 2>/dev/null", bin);
  int st = system (cmd);
  cr_assert (WIFEXITED (st) && WEXITSTATUS (st) == 2, "bad --log-level: status %d", st);
  snprintf (cmd, sizeof cmd, "'%s' --engine warp 2>/dev/null", bin);
  st = system (cmd);
  cr_assert (WIFEXITED (st) && WEXITSTATUS (st) == 2, "bad --engine: status %d", st);
  snprintf (cmd, sizeof cmd, "'%s' stray-argument 2>/dev/null", bin);
  st = system (cmd);
  cr_assert (WIFEXITED (st) && WEXITSTATUS (st) == 2, "stray argument: status %d", st);
}
