/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A stopped image server (SIGSTOP), through the store in process on the real engine
   (issue #17): a Remove, Get or mount that needs the server ends once the stall bound
   passes (the server is declared dead: killed, its FUSE connection aborted; a Get says
   so), an idle unmount stuck on it never holds up the idle unmounts of other layers,
   and a request waiting behind it stops, changing nothing, when its client hangs up. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "request.h"
#include "store/internal.h"
#include "store/layers.h"
#include "store_fixture.h"
#include "util.h"

#define STALL_MS 1500
#define FILL_MIB 8

static struct tl_store S;
static const struct pgd_ops *ops = &pgd_layers_ops;
static pid_t stopped = -1; /* continued and killed at teardown if a test failed */

static void
open_store (unsigned linger_ms, unsigned stall_ms)
{
  S.linger_ms = linger_ms;
  S.stall_ms = stall_ms;
  tl_store_setup (&S, "stall");
}

static void
teardown (void)
{
  if (stopped > 0)
    {
      kill (stopped, SIGKILL);
      kill (stopped, SIGCONT);
    }
  tl_store_teardown (&S);
}

TestSuite (stall, .fini = teardown, .timeout = 300);

static void
create_and_fill (const char *id, bool durable)
{
  tl_create (&S, id, NULL, false);
  char *dir = tl_get (&S, id);
  tl_fill (dir, "fill", FILL_MIB, durable);
  free (dir);
}

static void
put (const char *id)
{
  tl_put (&S, id);
}

/* The pid of ID's image server, from the engine's pid file. */
static pid_t
server_of (const char *id)
{
  char path[PATH_MAX * 2];
  cleanup_free char *data = NULL;
  struct pgd_err err;

  snprintf (path, sizeof path, "%s/run/%s/server.pid", S.home, id);
  cr_assert_eq (pgd_read_file (path, &data, NULL, &err), 0, "%s", err.msg);
  return (pid_t)atol (data);
}

/* The state letter of PID (field 3 of /proc/PID/stat), '?' when gone. */
static char
state_of (pid_t pid)
{
  char path[64];
  cleanup_free char *data = NULL;
  snprintf (path, sizeof path, "/proc/%d/stat", (int)pid);
  if (pgd_read_file (path, &data, NULL, NULL) < 0)
    return '?';
  char *p = strrchr (data, ')');
  return p && p[1] == ' ' ? p[2] : '?';
}

/* SIGSTOP PID and wait until it is stopped (the signal is delivered asynchronously). */
static void
stop_server (pid_t pid)
{
  cr_assert_eq (kill (pid, SIGSTOP), 0);
  stopped = pid;
  while (state_of (pid) != 'T')
    usleep (1000);
}

/* The process PID has exited (the server is not our child: init reaps it). */
static bool
gone (pid_t pid)
{
  char c = state_of (pid);
  return c == '?' || c == 'Z' || c == 'X';
}

static bool
mounted (const char *id)
{
  char mnt[PATH_MAX * 2];
  snprintf (mnt, sizeof mnt, "%s/mnt/%s", S.home, id);
  return pgd_is_mountpoint (mnt);
}

Test (stall, remove_of_a_layer_whose_server_is_stopped)
{
  struct pgd_err err = { 0 };
  bool exists = true;

  open_store (600000, STALL_MS);
  create_and_fill ("L", false);
  put ("L"); /* idle, mounted, dirty: its unmount must write through the server */
  pid_t pid = server_of ("L");
  stop_server (pid);
  cr_assert_eq (ops->remove (S.l, "L", &err), 0, "remove: %s", err.msg);
  cr_assert (gone (pid), "the stopped server %d still exists", (int)pid);
  stopped = -1;
  cr_assert_not (mounted ("L"));
  cr_assert_eq (ops->exists (S.l, "L", &exists, &err), 0);
  cr_assert_not (exists);
}

Test (stall, get_of_an_idle_layer_whose_server_is_stopped)
{
  struct pgd_err err = { 0 };
  char *dir = NULL, path[PATH_MAX * 2];
  struct stat st;

  open_store (600000, STALL_MS);
  create_and_fill ("L", true);
  put ("L");
  pid_t pid = server_of ("L");
  stop_server (pid);
  /* the mount is not handed out again: taken down (the server declared dead), and this
     Get fails saying so, since writes the server had not flushed may be lost */
  cr_assert_lt (ops->get (S.l, "L", NULL, &dir, &err), 0, "a Get on a stopped server succeeded");
  cr_assert_eq (err.errnum, PGD_ESTALLED, "%s", err.msg);
  cr_assert (strstr (err.msg, "layer L") && strstr (err.msg, "declared dead"), "%s", err.msg);
  cr_assert (gone (pid), "the stopped server %d still exists", (int)pid);
  stopped = -1;
  cr_assert_not (mounted ("L"));
  /* the next Get mounts it afresh on a new server, with the data made durable */
  cr_assert_eq (ops->get (S.l, "L", NULL, &dir, &err), 0, "get: %s", err.msg);
  cr_assert_neq (server_of ("L"), pid);
  snprintf (path, sizeof path, "%s/fill", dir);
  cr_assert_eq (stat (path, &st), 0, "%s", path);
  cr_assert_eq (st.st_size, (off_t)FILL_MIB << 20);
  free (dir);
  put ("L");
}

Test (stall, mount_on_a_server_that_stops_fails_and_leaves_nothing)
{
  struct pgd_err err = { 0 };
  char *dir = NULL, fuse[PATH_MAX * 2];

  open_store (600000, STALL_MS);
  tl_create (&S, "L", NULL, false);
  /* the engine stops the server right after it started, before the loop device */
  setenv ("PGD_TEST_STOP_SERVER", "1", 1);
  int rc = ops->get (S.l, "L", NULL, &dir, &err);
  unsetenv ("PGD_TEST_STOP_SERVER");
  cr_assert_lt (rc, 0, "a mount on a stopped server succeeded");
  cr_assert_eq (err.errnum, PGD_ESTALLED, "%s", err.msg);
  cr_assert (strstr (err.msg, "declared dead"), "%s", err.msg);
  cr_assert_not (mounted ("L"));
  snprintf (fuse, sizeof fuse, "%s/run/L/fuse", S.home);
  cr_assert_not (pgd_is_mountpoint (fuse), "the server's FUSE mount is left");
  /* and the layer mounts once its server behaves */
  cr_assert_eq (ops->get (S.l, "L", NULL, &dir, &err), 0, "get: %s", err.msg);
  free (dir);
  put ("L");
}

/* True while ID's entry is claimed (an unmount of it is under way). */
static bool
busy (const char *id)
{
  PGD_SCOPED_LOCK (&S.l->lock);
  struct layer *lay = pgd_layer_find (S.l, id, false);
  return lay && lay->busy;
}

/* Stop ID's server, Put ID, and wait until the reaper's unmount of it is stuck on the
   stopped server (with no stall bound it stays stuck). Returns the server's pid. */
static pid_t
stick_idle_unmount (const char *id)
{
  pid_t pid = server_of (id);
  stop_server (pid);
  put (id);
  while (!busy (id)) /* the reaper took it: its unmount waits on the server */
    usleep (1000);
  return pid;
}

/* Let ID's stuck unmount go: the server PID dies, the kernel fails what waited on it. */
static void
release_stuck (pid_t pid, const char *id)
{
  kill (pid, SIGKILL);
  kill (pid, SIGCONT);
  stopped = -1;
  while (busy (id))
    usleep (1000);
}

Test (stall, idle_unmount_stuck_on_one_server_does_not_hold_up_others)
{
  open_store (200, 0); /* no stall bound: the stuck unmount stays stuck */
  create_and_fill ("stuck", false);
  create_and_fill ("other", false);
  pid_t pid = stick_idle_unmount ("stuck");
  put ("other");
  while (mounted ("other"))
    usleep (1000);
  /* (its mount point is already out of mountinfo: the kernel flushes after that) */
  cr_assert (busy ("stuck"), "the stuck unmount ended on its own");
  release_stuck (pid, "stuck");
}

/* A Get, a Remove and a Create of a child, each waiting for the claim that a stuck idle
   unmount holds, end when their client hangs up, and none of them changes anything. */
Test (stall, requests_whose_client_left_while_waiting_change_nothing)
{
  struct pgd_err err = { 0 };
  struct pgd_create_req child = { .id = "C", .parent = "L", .rw = true };
  char *dir = NULL;
  bool exists = false;
  int sv[2];

  open_store (200, 0); /* no stall bound: the stuck unmount stays stuck */
  create_and_fill ("L", true);
  pid_t pid = stick_idle_unmount ("L");
  cr_assert_eq (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  pgd_request_attach (sv[0]);
  close (sv[1]); /* the client hangs up */
  cr_assert_lt (ops->get (S.l, "L", NULL, &dir, &err), 0, "the Get waited on");
  cr_assert_eq (err.errnum, ECANCELED, "%s", err.msg);
  cr_assert (strstr (err.msg, "get layer L"), "%s", err.msg);
  cr_assert_lt (ops->remove (S.l, "L", &err), 0, "the Remove waited on");
  cr_assert_eq (err.errnum, ECANCELED, "%s", err.msg);
  cr_assert_lt (ops->create (S.l, &child, &err), 0, "the Create waited on");
  cr_assert_eq (err.errnum, ECANCELED, "%s", err.msg);
  pgd_request_detach ();
  close (sv[0]);
  release_stuck (pid, "L");
  cr_assert_not (mounted ("L"), "the cancelled Get mounted the layer");
  cr_assert_eq (ops->exists (S.l, "L", &exists, &err), 0);
  cr_assert (exists, "the cancelled Remove deleted the layer");
  cr_assert_eq (ops->exists (S.l, "C", &exists, &err), 0);
  cr_assert_not (exists, "the cancelled Create made the child");
  /* and without a client attached, the same calls go through */
  cr_assert_eq (ops->get (S.l, "L", NULL, &dir, &err), 0, "get: %s", err.msg);
  free (dir);
  put ("L");
}
