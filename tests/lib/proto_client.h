/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Protocol-test helpers: run the real ploop-graphdriver binary on a socket in a fresh
   temporary directory, talk raw HTTP/1.1 to it, parse what comes back, and clean up
   (process, mounts, image servers, directory) even when a test failed. */
#ifndef PGD_PROTO_CLIENT_H
#define PGD_PROTO_CLIENT_H

#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Generous bound on waits (server start, exit, a reply) so a broken server fails the
   test instead of hanging it; never a performance assertion. */
#define PC_SAFETY_MS 120000

/* One server process and its private directory. */
struct pc_server
{
  pid_t pid;             /* 0 when not running */
  char dir[PATH_MAX];    /* the temporary directory holding everything below */
  char socket[PATH_MAX]; /* <dir>/plugins/ploop.sock */
  char state[PATH_MAX];  /* <dir>/state.json */
  char home[PATH_MAX];   /* <dir>/home */
  char log[PATH_MAX];    /* <dir>/server.log: the server's stderr */
  const char *extra_arg; /* one more option for the binary, or NULL */
};

/* One header line of a response. */
struct pc_header
{
  char *name;
  char *value;
};

/* A parsed response. COMPLETE: the body ended as its framing says (Content-Length
   reached, or the final zero chunk seen); false when the connection was cut. */
struct pc_response
{
  int status;
  struct pc_header *headers;
  size_t nheaders;
  char *body; /* NUL-terminated for convenience; BODY_LEN excludes the NUL */
  size_t body_len;
  bool chunked;
  bool complete;
  bool closed; /* the server closed the connection right after the response */
};

/* Buffered reading from a connection, for responses read piece by piece. */
struct pc_reader
{
  int fd;
  char buf[65536];
  size_t start;
  size_t end;
  size_t chunk_left; /* bytes left in the current chunk */
  bool chunk_crlf;   /* the CRLF after the current chunk is still to be read */
};

/* Make a fresh temporary directory for S and start the server in it; WITH_HOME passes
   --home <dir>/home. Returns 0, or -1 with a message on stderr. */
int pc_start (struct pc_server *s, bool with_home);

/* pc_start with EXTRA_ARG (e.g. "--supervise") added to the command line. */
int pc_start_with (struct pc_server *s, bool with_home, const char *extra_arg);

/* Start the server again in S's existing directory (after it stopped). */
int pc_spawn (struct pc_server *s, bool with_home);

/* Start the server socket-activated: LISTEN_FD becomes its fd 3 (LISTEN_PID/LISTEN_FDS
   set); S->socket becomes PATH, the socket bound to LISTEN_FD. */
int pc_spawn_activated (struct pc_server *s, bool with_home, int listen_fd, const char *path);

/* The absolute path of $PGD_BUILD/ploop-graphdriver (default build/) into OUT. */
int pc_binary (char *out);

/* Send SIG and wait up to TIMEOUT_MS for the process to end; 0 with its wait status in
 *STATUS, -1 when it is still running. */
int pc_signal_and_wait (struct pc_server *s, int sig, int timeout_ms, int *status);

/* Stop the server (SIGTERM, then SIGKILL), unmount what is left under its directory,
   kill leftover image servers, remove the directory. Safe to call twice. Returns 0 when
   the server was not running or exited with status 0 on SIGTERM (a sanitizer report
   would change that); otherwise -1, with the server's log tail on stderr. */
int pc_stop (struct pc_server *s);

/* True while the server process exists. */
bool pc_alive (struct pc_server *s);

/* The last bytes of the server's log, for failure messages (static buffer). */
const char *pc_log_tail (const struct pc_server *s);

/* A new connection to the server (receive timeout PC_SAFETY_MS); -1 on failure. */
int pc_connect (const struct pc_server *s);

/* Write all LEN bytes; 0, or -1 with errno. */
int pc_send_all (int fd, const void *buf, size_t len);

/* Send one HTTP chunk of LEN bytes (LEN 0: the final chunk). */
int pc_send_chunk (int fd, const void *buf, size_t len);

/* Read a whole response until the server closes the connection. */
int pc_read_response (int fd, struct pc_response *r);

/* Start reading FD: status line and headers into R (body left in the reader). */
int pc_read_head (struct pc_reader *rd, int fd, struct pc_response *r);

/* Next piece of a chunked body into BUF (up to CAP bytes): >0 bytes, 0 at the final
   chunk, -1 when the stream was cut before it. */
ssize_t pc_read_chunk (struct pc_reader *rd, char *buf, size_t cap);

/* Connect, send the raw request REQ, read the whole response. */
int pc_roundtrip (const struct pc_server *s, const void *req, size_t len, struct pc_response *r);

/* POST BODY to PATH with the headers dockerd 20.10.24 sends (empty Host, Go user agent,
   Content-Length, Accept v1.2). */
int pc_post (const struct pc_server *s, const char *path, const char *body, struct pc_response *r);

/* The value of header NAME (case-insensitive), or NULL. */
const char *pc_header (const struct pc_response *r, const char *name);

/* The body parsed as JSON, or NULL. Release with json_decref. */
json_t *pc_json (const struct pc_response *r);

/* The string member KEY of the JSON body, copied into a static buffer; NULL if none. */
const char *pc_json_str (const struct pc_response *r, const char *key);

/* Free what R holds. */
void pc_response_free (struct pc_response *r);

/* Record a worker thread's first error into ERROR (CAP bytes; later errors are
   consequences) and raise STOP, which every worker of the test polls. Returns -1. */
int pc_worker_fail (char *error, size_t cap, atomic_bool *stop, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));

/* POST BODY to PATH on S from a worker thread: 0 when the answer is 200 and a JSON object
   without an Err (and, with WANT_CLOSED, the connection was closed after it); the object
   goes to *OUT when OUT is not NULL. Otherwise -1 through pc_worker_fail (ERROR, CAP,
   STOP). No Criterion assertion: this runs in worker threads. */
int pc_worker_call (const struct pc_server *s, char *error, size_t cap, atomic_bool *stop,
                    bool want_closed, const char *path, const char *body, json_t **out);

/* A Criterion suite NAME whose every test gets the server SRV started afresh with a
   Home (SIGPIPE ignored: a server that hangs up while a test writes must not kill the
   test) and stopped after it, whatever happened; the rest are TestSuite options. */
#define PC_SERVER_SUITE(name, srv, ...)                                                            \
  static void name##_setup (void)                                                                  \
  {                                                                                                \
    signal (SIGPIPE, SIG_IGN);                                                                     \
    cr_assert_eq (pc_start (&(srv), true), 0, "the server did not start");                         \
  }                                                                                                \
  static void name##_teardown (void) { pc_stop (&(srv)); }                                         \
  TestSuite (name, .init = name##_setup, .fini = name##_teardown, ##__VA_ARGS__)

#endif
