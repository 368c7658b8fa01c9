/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The containerd face over its socket: the real ploop-snapshotter binary and a real
   gRPC client (grpc's C core, messages from containerd's .proto files by protoc-c).
   Semantics of Prepare/View/Mounts/Commit/Remove/Stat/Update/List/Usage, the status
   codes containerd maps back, bad input that changes nothing, garbage on the socket,
   and a restart that keeps snapshots and mounts. Needs root, FUSE and loop devices. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.pb-c.h"
#include "leaks.h"
#include "proto_client.h"

#define SVC "/containerd.services.snapshots.v1.Snapshots/"
#define MAX_MSGS 8

typedef Containerd__Services__Snapshots__V1__PrepareSnapshotRequest PrepareReq;
typedef Containerd__Services__Snapshots__V1__PrepareSnapshotRequest__LabelsEntry Label;
typedef Containerd__Services__Snapshots__V1__MountsResponse MountsResp;
typedef Containerd__Services__Snapshots__V1__Info Info;

static struct pc_server srv;
static grpc_channel *chan;
static grpc_completion_queue *cq;

/* What a call brought back: status, details, the response messages. */
struct reply
{
  grpc_status_code status;
  char details[4096];
  grpc_slice msgs[MAX_MSGS];
  size_t nmsgs;
};

static void
reply_free (struct reply *r)
{
  for (size_t i = 0; i < r->nmsgs; i++)
    grpc_slice_unref (r->msgs[i]);
  r->nmsgs = 0;
}

static void
wait_tag (void *tag)
{
  grpc_event ev = grpc_completion_queue_pluck (
      cq, tag,
      gpr_time_add (gpr_now (GPR_CLOCK_REALTIME),
                    gpr_time_from_millis (PC_SAFETY_MS, GPR_TIMESPAN)),
      NULL);
  cr_assert_eq (ev.type, GRPC_OP_COMPLETE, "no completion from the server\n%s", pc_log_tail (&srv));
}

/* Call METHOD with the raw request bytes REQ/LEN; collect every response message. */
static void
call_raw (const char *method, const void *req, size_t len, struct reply *r)
{
  grpc_metadata_array md_in, md_trail;
  grpc_slice details, rs = grpc_slice_from_copied_buffer (req, len);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create (&rs, 1);
  grpc_op ops[6];

  memset (r, 0, sizeof *r);
  memset (ops, 0, sizeof ops);
  grpc_metadata_array_init (&md_in);
  grpc_metadata_array_init (&md_trail);
  grpc_slice m = grpc_slice_from_static_string (method);
  grpc_call *call = grpc_channel_create_call (chan, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
                                              gpr_inf_future (GPR_CLOCK_REALTIME), NULL);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = bb;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_in;
  cr_assert_eq (grpc_call_start_batch (call, ops, 4, (void *)1, NULL), GRPC_CALL_OK);
  wait_tag ((void *)1);
  for (;;)
    {
      grpc_byte_buffer *in = NULL;
      grpc_op rm = { .op = GRPC_OP_RECV_MESSAGE };
      rm.data.recv_message.recv_message = &in;
      cr_assert_eq (grpc_call_start_batch (call, &rm, 1, (void *)2, NULL), GRPC_CALL_OK);
      wait_tag ((void *)2);
      if (in == NULL)
        break;
      grpc_byte_buffer_reader rd;
      cr_assert (grpc_byte_buffer_reader_init (&rd, in));
      cr_assert_lt (r->nmsgs, MAX_MSGS, "too many response messages");
      r->msgs[r->nmsgs++] = grpc_byte_buffer_reader_readall (&rd);
      grpc_byte_buffer_reader_destroy (&rd);
      grpc_byte_buffer_destroy (in);
    }
  grpc_op st = { .op = GRPC_OP_RECV_STATUS_ON_CLIENT };
  st.data.recv_status_on_client.trailing_metadata = &md_trail;
  st.data.recv_status_on_client.status = &r->status;
  st.data.recv_status_on_client.status_details = &details;
  cr_assert_eq (grpc_call_start_batch (call, &st, 1, (void *)3, NULL), GRPC_CALL_OK);
  wait_tag ((void *)3);
  snprintf (r->details, sizeof r->details, "%.*s", (int)GRPC_SLICE_LENGTH (details),
            (const char *)GRPC_SLICE_START_PTR (details));
  grpc_slice_unref (details);
  grpc_metadata_array_destroy (&md_in);
  grpc_metadata_array_destroy (&md_trail);
  grpc_byte_buffer_destroy (bb);
  grpc_slice_unref (rs);
  grpc_call_unref (call);
}

/* Call METHOD with the message REQ. */
static void
call (const char *method, const ProtobufCMessage *req, struct reply *r)
{
  size_t len = protobuf_c_message_get_packed_size (req);
  uint8_t *buf = malloc (len + 1);
  cr_assert_not_null (buf);
  protobuf_c_message_pack (req, buf);
  call_raw (method, buf, len, r);
  free (buf);
}

/* Call METHOD and expect status CODE. */
#define EXPECT(code, method, req, r)                                                               \
  do                                                                                               \
    {                                                                                              \
      call (SVC method, &(req)->base, r);                                                          \
      cr_assert_eq ((r)->status, code, "%s: status %d (%s), expected %d", method, (r)->status,     \
                    (r)->details, code);                                                           \
    }                                                                                              \
  while (0)

static void
start_server (void)
{
  char bin[PATH_MAX], snapbin[PATH_MAX], root[PATH_MAX + 8];
  pid_t parent = getpid ();

  cr_assert_eq (pc_binary (bin), 0);
  snprintf (snapbin, sizeof snapbin, "%s", bin);
  snprintf (strrchr (snapbin, '/'), sizeof snapbin - (strrchr (snapbin, '/') - snapbin),
            "/ploop-snapshotter");
  snprintf (root, sizeof root, "%s/root", srv.dir);
  int logfd = open (srv.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  cr_assert_geq (logfd, 0);
  pid_t pid = fork ();
  cr_assert_geq (pid, 0);
  if (pid == 0)
    {
      prctl (PR_SET_PDEATHSIG, SIGKILL);
      if (getppid () != parent)
        _exit (127);
      dup2 (logfd, 2);
      execl (snapbin, snapbin, "--socket", srv.socket, "--root", root, "--size", "256M",
             "--log-level", "debug", (char *)NULL);
      _exit (127);
    }
  close (logfd);
  srv.pid = pid;
  /* ready when the socket accepts (a killed server's stale socket refuses) */
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  snprintf (sa.sun_path, sizeof sa.sun_path, "%s", srv.socket);
  for (int i = 0;; i++)
    {
      cr_assert (pc_alive (&srv), "the snapshotter exited at start:\n%s", pc_log_tail (&srv));
      cr_assert_lt (i, PC_SAFETY_MS / 20, "the snapshotter does not listen:\n%s",
                    pc_log_tail (&srv));
      int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      bool up = fd >= 0 && connect (fd, (struct sockaddr *)&sa, sizeof sa) == 0;
      if (fd >= 0)
        close (fd);
      if (up)
        break;
      usleep (20000);
    }
  char target[PATH_MAX + 8];
  snprintf (target, sizeof target, "unix:%s", srv.socket);
  grpc_channel_credentials *creds = grpc_insecure_credentials_create ();
  chan = grpc_channel_create (target, creds, NULL);
  grpc_channel_credentials_release (creds);
}

static void
stop_server (void)
{
  if (chan)
    grpc_channel_destroy (chan);
  chan = NULL;
}

static void
setup (void)
{
  memset (&srv, 0, sizeof srv);
  snprintf (srv.dir, sizeof srv.dir, "/tmp/pgd-snap-XXXXXX");
  cr_assert_not_null (mkdtemp (srv.dir));
  snprintf (srv.socket, sizeof srv.socket, "%s/snap.sock", srv.dir);
  snprintf (srv.log, sizeof srv.log, "%s/server.log", srv.dir);
  grpc_init ();
  cq = grpc_completion_queue_create_for_pluck (NULL);
  start_server ();
}

static void
teardown (void)
{
  stop_server ();
  grpc_completion_queue_shutdown (cq);
  while (grpc_completion_queue_pluck (cq, NULL, gpr_inf_future (GPR_CLOCK_REALTIME), NULL).type
         != GRPC_QUEUE_SHUTDOWN)
    ;
  grpc_completion_queue_destroy (cq);
  grpc_shutdown ();
  pc_stop (&srv);
}

TestSuite (snapshotter, .init = setup, .fini = teardown);

/* Prepare (KIND "prepare") or View KEY on PARENT (NULL: none) with one label; the
   mount's source and options into SRC/OPTS when given. Returns the status. */
static grpc_status_code
make (const char *method, const char *key, const char *parent, const char *lk, const char *lv,
      char *src, char *opts, char *details)
{
  PrepareReq req;
  Label l, *lp[1] = { &l };
  struct reply r;

  /* ViewSnapshotRequest has the same fields and numbers */
  containerd__services__snapshots__v1__prepare_snapshot_request__init (&req);
  req.key = (char *)key;
  req.parent = (char *)(parent ? parent : "");
  req.snapshotter = (char *)"ploop";
  if (lk)
    {
      containerd__services__snapshots__v1__prepare_snapshot_request__labels_entry__init (&l);
      l.key = (char *)lk;
      l.value = (char *)lv;
      req.n_labels = 1;
      req.labels = lp;
    }
  call (method, &req.base, &r);
  if (details)
    snprintf (details, 4096, "%s", r.details);
  if (r.status == GRPC_STATUS_OK)
    {
      cr_assert_eq (r.nmsgs, 1);
      MountsResp *m = containerd__services__snapshots__v1__mounts_response__unpack (
          NULL, GRPC_SLICE_LENGTH (r.msgs[0]), GRPC_SLICE_START_PTR (r.msgs[0]));
      cr_assert_not_null (m);
      cr_assert_eq (m->n_mounts, 1);
      cr_assert_str_eq (m->mounts[0]->type, "bind");
      if (src)
        snprintf (src, PATH_MAX, "%s", m->mounts[0]->source);
      if (opts)
        {
          opts[0] = '\0';
          for (size_t i = 0; i < m->mounts[0]->n_options; i++)
            snprintf (opts + strlen (opts), 64 - strlen (opts), "%s%s", i ? "," : "",
                      m->mounts[0]->options[i]);
        }
      containerd__services__snapshots__v1__mounts_response__free_unpacked (m, NULL);
    }
  reply_free (&r);
  return r.status;
}

static void
commit (const char *name, const char *key, grpc_status_code want)
{
  Containerd__Services__Snapshots__V1__CommitSnapshotRequest req;
  struct reply r;
  containerd__services__snapshots__v1__commit_snapshot_request__init (&req);
  req.name = (char *)name;
  req.key = (char *)key;
  EXPECT (want, "Commit", &req, &r);
  reply_free (&r);
}

static void
rm (const char *key, grpc_status_code want)
{
  Containerd__Services__Snapshots__V1__RemoveSnapshotRequest req;
  struct reply r;
  containerd__services__snapshots__v1__remove_snapshot_request__init (&req);
  req.key = (char *)key;
  EXPECT (want, "Remove", &req, &r);
  reply_free (&r);
}

/* Stat KEY; its Info (free with ..._info__free_unpacked) or NULL when not OK. */
static Info *
stat_key (const char *key, grpc_status_code want)
{
  Containerd__Services__Snapshots__V1__StatSnapshotRequest req;
  struct reply r;
  Info *info = NULL;
  containerd__services__snapshots__v1__stat_snapshot_request__init (&req);
  req.key = (char *)key;
  EXPECT (want, "Stat", &req, &r);
  if (want == GRPC_STATUS_OK)
    {
      Containerd__Services__Snapshots__V1__StatSnapshotResponse *resp
          = containerd__services__snapshots__v1__stat_snapshot_response__unpack (
              NULL, GRPC_SLICE_LENGTH (r.msgs[0]), GRPC_SLICE_START_PTR (r.msgs[0]));
      cr_assert_not_null (resp);
      cr_assert_not_null (resp->info);
      info = resp->info;
      resp->info = NULL;
      containerd__services__snapshots__v1__stat_snapshot_response__free_unpacked (resp, NULL);
    }
  reply_free (&r);
  return info;
}

/* The keys List streams, sorted and joined with spaces into OUT. */
static void
list_keys (char *out, size_t cap)
{
  Containerd__Services__Snapshots__V1__ListSnapshotsRequest req;
  struct reply r;
  char *keys[64];
  size_t n = 0;

  containerd__services__snapshots__v1__list_snapshots_request__init (&req);
  EXPECT (GRPC_STATUS_OK, "List", &req, &r);
  for (size_t i = 0; i < r.nmsgs; i++)
    {
      Containerd__Services__Snapshots__V1__ListSnapshotsResponse *resp
          = containerd__services__snapshots__v1__list_snapshots_response__unpack (
              NULL, GRPC_SLICE_LENGTH (r.msgs[i]), GRPC_SLICE_START_PTR (r.msgs[i]));
      cr_assert_not_null (resp);
      for (size_t j = 0; j < resp->n_info && n < 64; j++)
        keys[n++] = strdup (resp->info[j]->name);
      containerd__services__snapshots__v1__list_snapshots_response__free_unpacked (resp, NULL);
    }
  reply_free (&r);
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++)
      if (strcmp (keys[j], keys[i]) < 0)
        {
          char *t = keys[i];
          keys[i] = keys[j];
          keys[j] = t;
        }
  out[0] = '\0';
  for (size_t i = 0; i < n; i++)
    {
      snprintf (out + strlen (out), cap - strlen (out), "%s%s", i ? " " : "", keys[i]);
      free (keys[i]);
    }
}

/* Entries of the store's layers directory: one per snapshot, whatever happened. */
static int
layer_count (void)
{
  char dir[PATH_MAX + 32];
  int n = 0;
  snprintf (dir, sizeof dir, "%s/root/store/layers", srv.dir);
  DIR *d = opendir (dir);
  cr_assert_not_null (d, "open %s", dir);
  for (struct dirent *de; (de = readdir (d)) != NULL;)
    n += de->d_name[0] != '.';
  closedir (d);
  return n;
}

/* Wait until the store holds N layers: Remove answers first and deletes the layer in
   the background. */
static void
wait_layers (int n)
{
  for (int i = 0; layer_count () != n; i++)
    {
      cr_assert_lt (i, PC_SAFETY_MS / 20, "%d layers, expected %d", layer_count (), n);
      usleep (20000);
    }
}

static void
write_file (const char *dir, const char *name, const char *text)
{
  char path[PATH_MAX + 64];
  snprintf (path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen (path, "w");
  cr_assert_not_null (f, "create %s: %s", path, strerror (errno));
  fputs (text, f);
  cr_assert_eq (fclose (f), 0);
}

static void
expect_file (const char *dir, const char *name, const char *text)
{
  char path[PATH_MAX + 64], buf[256] = "";
  snprintf (path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen (path, "r");
  cr_assert_not_null (f, "open %s: %s", path, strerror (errno));
  cr_assert_not_null (fgets (buf, sizeof buf, f));
  fclose (f);
  cr_assert_str_eq (buf, text, "%s", path);
}

/* End of a test that removed every snapshot: nothing of them is left mounted or
   attached, and the server exits 0 on SIGTERM (how a sanitizer build reports). */
static void
finish (void)
{
  char what[4096];
  wait_layers (0);
  cr_assert_eq (lk_mounts_under (srv.dir, what, sizeof what), 0, "mounts left: %s", what);
  cr_assert_eq (lk_loops_under (srv.dir, what, sizeof what), 0, "loop devices left: %s", what);
  stop_server ();
  cr_assert_eq (pc_stop (&srv), 0, "the snapshotter did not exit cleanly on SIGTERM");
}

Test (snapshotter, lifecycle)
{
  char src[PATH_MAX], vsrc[PATH_MAX], opts[64], keys[1024];

  cr_assert_eq (make (SVC "Prepare", "ns/1/k1", NULL, NULL, NULL, src, opts, NULL), GRPC_STATUS_OK);
  cr_assert_str_eq (opts, "rbind,rw");
  write_file (src, "f", "one\n");
  Info *info = stat_key ("ns/1/k1", GRPC_STATUS_OK);
  cr_assert_eq (info->kind, CONTAINERD__SERVICES__SNAPSHOTS__V1__KIND__ACTIVE);
  containerd__services__snapshots__v1__info__free_unpacked (info, NULL);

  commit ("ns/2/c1", "ns/1/k1", GRPC_STATUS_OK);
  stat_key ("ns/1/k1", GRPC_STATUS_NOT_FOUND);
  info = stat_key ("ns/2/c1", GRPC_STATUS_OK);
  cr_assert_eq (info->kind, CONTAINERD__SERVICES__SNAPSHOTS__V1__KIND__COMMITTED);
  cr_assert_str_eq (info->parent, "");
  containerd__services__snapshots__v1__info__free_unpacked (info, NULL);

  cr_assert_eq (make (SVC "View", "ns/3/v1", "ns/2/c1", NULL, NULL, vsrc, opts, NULL),
                GRPC_STATUS_OK);
  cr_assert_str_eq (opts, "rbind,ro");
  expect_file (vsrc, "f", "one\n");
  cr_assert_eq (make (SVC "Prepare", "ns/4/k2", "ns/2/c1", NULL, NULL, src, NULL, NULL),
                GRPC_STATUS_OK);
  expect_file (src, "f", "one\n");
  write_file (src, "f", "two\n");
  expect_file (vsrc, "f", "one\n"); /* a sibling's write does not reach the view */
  info = stat_key ("ns/4/k2", GRPC_STATUS_OK);
  cr_assert_str_eq (info->parent, "ns/2/c1");
  containerd__services__snapshots__v1__info__free_unpacked (info, NULL);

  commit ("ns/5/c2", "ns/3/v1", GRPC_STATUS_FAILED_PRECONDITION); /* a view */
  commit ("ns/5/c2", "ns/2/c1", GRPC_STATUS_FAILED_PRECONDITION); /* committed already */
  rm ("ns/2/c1", GRPC_STATUS_FAILED_PRECONDITION);                /* has children */
  list_keys (keys, sizeof keys);
  cr_assert_str_eq (keys, "ns/2/c1 ns/3/v1 ns/4/k2");
  cr_assert_eq (layer_count (), 3);

  rm ("ns/3/v1", GRPC_STATUS_OK);
  rm ("ns/4/k2", GRPC_STATUS_OK);
  rm ("ns/2/c1", GRPC_STATUS_OK);
  rm ("ns/2/c1", GRPC_STATUS_NOT_FOUND);
  list_keys (keys, sizeof keys);
  cr_assert_str_eq (keys, "");
  wait_layers (0);
  finish ();
}

Test (snapshotter, bad_input_changes_nothing)
{
  char src[PATH_MAX], keys[1024], details[4096];
  char *big = malloc (64 * 1024 + 1);
  cr_assert_not_null (big);
  memset (big, 'k', 64 * 1024);
  big[64 * 1024] = '\0';

  cr_assert_eq (make (SVC "Prepare", "ns/1/a", NULL, NULL, NULL, src, NULL, NULL), GRPC_STATUS_OK);
  cr_assert_eq (make (SVC "Prepare", "ns/1/a", NULL, NULL, NULL, NULL, NULL, details),
                GRPC_STATUS_ALREADY_EXISTS);
  cr_assert (strstr (details, "ns/1/a"), "the error names the key: %s", details);
  cr_assert_eq (make (SVC "Prepare", big, NULL, NULL, NULL, NULL, NULL, NULL),
                GRPC_STATUS_INVALID_ARGUMENT);
  cr_assert_eq (make (SVC "Prepare", "", NULL, NULL, NULL, NULL, NULL, NULL),
                GRPC_STATUS_INVALID_ARGUMENT);
  cr_assert_eq (make (SVC "Prepare", "ns/1/b", "ns/1/a", NULL, NULL, NULL, NULL, details),
                GRPC_STATUS_INVALID_ARGUMENT); /* the parent is active */
  cr_assert (strstr (details, "not a committed"), "%s", details);
  cr_assert_eq (make (SVC "View", "ns/1/b", "ns/9/none", NULL, NULL, NULL, NULL, NULL),
                GRPC_STATUS_NOT_FOUND);
  cr_assert_eq (make (SVC "Prepare", "ns/1/b", NULL, big + 100, "v", NULL, NULL, NULL),
                GRPC_STATUS_INVALID_ARGUMENT); /* label longer than 4096 */
  cr_assert_eq (make (SVC "Prepare", "ns/1/b", NULL, "", "v", NULL, NULL, NULL),
                GRPC_STATUS_INVALID_ARGUMENT);
  cr_assert_eq (make (SVC "Prepare", "ns/1/b", NULL, "containerd.io/snapshot/ploop.size", "lots",
                      NULL, NULL, details),
                GRPC_STATUS_INVALID_ARGUMENT);
  cr_assert (strstr (details, "ploop.size"), "%s", details);
  stat_key ("ns/7/unknown", GRPC_STATUS_NOT_FOUND);
  stat_key (big, GRPC_STATUS_INVALID_ARGUMENT);
  rm ("ns/7/unknown", GRPC_STATUS_NOT_FOUND);
  commit ("ns/1/a", "ns/1/a", GRPC_STATUS_ALREADY_EXISTS);

  /* malformed protobuf, an unknown method, a field Update may not touch */
  struct reply r;
  call_raw (SVC "Prepare", "\x12\xff\xff\xff", 4, &r);
  cr_assert_eq (r.status, GRPC_STATUS_INVALID_ARGUMENT, "%s", r.details);
  reply_free (&r);
  call_raw (SVC "Explode", "", 0, &r);
  cr_assert_eq (r.status, GRPC_STATUS_UNIMPLEMENTED, "%s", r.details);
  reply_free (&r);
  Containerd__Services__Snapshots__V1__UpdateSnapshotRequest up;
  Info info;
  Google__Protobuf__FieldMask mask;
  char *paths[] = { (char *)"kind" };
  containerd__services__snapshots__v1__update_snapshot_request__init (&up);
  containerd__services__snapshots__v1__info__init (&info);
  google__protobuf__field_mask__init (&mask);
  info.name = (char *)"ns/1/a";
  mask.n_paths = 1;
  mask.paths = paths;
  up.info = &info;
  up.update_mask = &mask;
  EXPECT (GRPC_STATUS_INVALID_ARGUMENT, "Update", &up, &r);
  reply_free (&r);

  /* garbage on the socket: the server drops that connection and serves on */
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  snprintf (sa.sun_path, sizeof sa.sun_path, "%s", srv.socket);
  for (int i = 0; i < 3; i++)
    {
      int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      cr_assert_geq (fd, 0);
      cr_assert_eq (connect (fd, (struct sockaddr *)&sa, sizeof sa), 0);
      const char *junk[] = { "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                             "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff",
                             "\x00\x01\x02\x03garbage" };
      (void)!write (fd, junk[i], strlen (junk[i]) + (i == 2 ? 12 : 0));
      close (fd);
    }
  cr_assert (pc_alive (&srv), "the server died on garbage:\n%s", pc_log_tail (&srv));

  list_keys (keys, sizeof keys);
  cr_assert_str_eq (keys, "ns/1/a", "bad input changed the snapshots");
  wait_layers (1); /* bad input left no layer behind */
  rm ("ns/1/a", GRPC_STATUS_OK);
  free (big);
  finish ();
}

Test (snapshotter, labels_update_usage)
{
  char src[PATH_MAX];
  struct reply r;

  cr_assert_eq (make (SVC "Prepare", "ns/1/a", NULL, "x", "1", src, NULL, NULL), GRPC_STATUS_OK);
  char big[1 << 16];
  memset (big, 'z', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  for (int i = 0; i < 16; i++)
    {
      char name[16];
      snprintf (name, sizeof name, "f%d", i);
      write_file (src, name, big);
    }
  Containerd__Services__Snapshots__V1__UsageRequest ureq;
  containerd__services__snapshots__v1__usage_request__init (&ureq);
  ureq.key = (char *)"ns/1/a";
  EXPECT (GRPC_STATUS_OK, "Usage", &ureq, &r);
  Containerd__Services__Snapshots__V1__UsageResponse *u
      = containerd__services__snapshots__v1__usage_response__unpack (
          NULL, GRPC_SLICE_LENGTH (r.msgs[0]), GRPC_SLICE_START_PTR (r.msgs[0]));
  cr_assert_not_null (u);
  cr_assert_geq (u->size, 16 * 65535, "usage %lld bytes after writing 1 MiB", (long long)u->size);
  cr_assert_geq (u->inodes, 16, "usage %lld inodes after 16 files", (long long)u->inodes);
  containerd__services__snapshots__v1__usage_response__free_unpacked (u, NULL);
  reply_free (&r);

  /* labels.y sets one, labels replaces all */
  Containerd__Services__Snapshots__V1__UpdateSnapshotRequest up;
  Info info;
  Containerd__Services__Snapshots__V1__Info__LabelsEntry l, *lp[1] = { &l };
  Google__Protobuf__FieldMask mask;
  char *p1[] = { (char *)"labels.y" }, *p2[] = { (char *)"labels" };
  containerd__services__snapshots__v1__update_snapshot_request__init (&up);
  containerd__services__snapshots__v1__info__init (&info);
  containerd__services__snapshots__v1__info__labels_entry__init (&l);
  google__protobuf__field_mask__init (&mask);
  l.key = (char *)"y";
  l.value = (char *)"2";
  info.name = (char *)"ns/1/a";
  info.n_labels = 1;
  info.labels = lp;
  mask.n_paths = 1;
  mask.paths = p1;
  up.info = &info;
  up.update_mask = &mask;
  EXPECT (GRPC_STATUS_OK, "Update", &up, &r);
  reply_free (&r);
  Info *got = stat_key ("ns/1/a", GRPC_STATUS_OK);
  cr_assert_eq (got->n_labels, 2, "labels after labels.y: %zu", got->n_labels);
  containerd__services__snapshots__v1__info__free_unpacked (got, NULL);
  l.key = (char *)"z";
  mask.paths = p2;
  EXPECT (GRPC_STATUS_OK, "Update", &up, &r);
  reply_free (&r);
  got = stat_key ("ns/1/a", GRPC_STATUS_OK);
  cr_assert_eq (got->n_labels, 1);
  cr_assert_str_eq (got->labels[0]->key, "z");
  containerd__services__snapshots__v1__info__free_unpacked (got, NULL);
  rm ("ns/1/a", GRPC_STATUS_OK);
  finish ();
}

Test (snapshotter, restart_keeps_snapshots_and_mounts)
{
  char src[PATH_MAX], again[PATH_MAX], keys[1024];
  int status;

  cr_assert_eq (make (SVC "Prepare", "ns/1/a", NULL, NULL, NULL, src, NULL, NULL), GRPC_STATUS_OK);
  write_file (src, "f", "kept\n");
  commit ("ns/1/c", "ns/1/a", GRPC_STATUS_OK);
  cr_assert_eq (make (SVC "Prepare", "ns/1/b", "ns/1/c", NULL, NULL, src, NULL, NULL),
                GRPC_STATUS_OK);
  write_file (src, "g", "live\n");

  stop_server ();
  cr_assert_eq (pc_signal_and_wait (&srv, SIGKILL, PC_SAFETY_MS, &status), 0);
  expect_file (src, "g", "live\n"); /* the mount outlives the snapshotter */
  start_server ();
  list_keys (keys, sizeof keys);
  cr_assert_str_eq (keys, "ns/1/b ns/1/c");

  Containerd__Services__Snapshots__V1__MountsRequest mreq;
  struct reply r;
  containerd__services__snapshots__v1__mounts_request__init (&mreq);
  mreq.key = (char *)"ns/1/b";
  EXPECT (GRPC_STATUS_OK, "Mounts", &mreq, &r);
  MountsResp *m = containerd__services__snapshots__v1__mounts_response__unpack (
      NULL, GRPC_SLICE_LENGTH (r.msgs[0]), GRPC_SLICE_START_PTR (r.msgs[0]));
  cr_assert_not_null (m);
  snprintf (again, sizeof again, "%s", m->mounts[0]->source);
  containerd__services__snapshots__v1__mounts_response__free_unpacked (m, NULL);
  reply_free (&r);
  cr_assert_str_eq (again, src, "Mounts changed across the restart");
  expect_file (again, "f", "kept\n");
  expect_file (again, "g", "live\n");
  mreq.key = (char *)"ns/1/c";
  EXPECT (GRPC_STATUS_FAILED_PRECONDITION, "Mounts", &mreq, &r); /* committed */
  reply_free (&r);
  rm ("ns/1/b", GRPC_STATUS_OK);
  rm ("ns/1/c", GRPC_STATUS_OK);
  wait_layers (0);
  finish ();
}
