/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The layer store in process, on the real engine: graphtest's create/snapshot checks,
   mount reference counting, removal, StorageOpt, persisted Init, ApplyDiff once. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/layers.h"
#include "util.h"

static char tmp[PATH_MAX];
static char home[PATH_MAX + 16];
static char state[PATH_MAX + 16];
static char exe[PATH_MAX];
static struct pgd_layers *L;
static const struct pgd_ops *ops = &pgd_layers_ops;
static unsigned linger_ms; /* 0 for every test but the idle_* ones */

static void
open_store (void)
{
  struct pgd_layers_config cfg
      = { .state_file = state, .engine = "user", .exe = exe, .linger_ms = linger_ms };
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_layers_open (&L, &cfg, &err), 0, "open: %s", err.msg);
}

static void
setup (void)
{
  const char *b = getenv ("PGD_BUILD");
  char *r = realpath (b ? b : "build", NULL);
  cr_assert_not_null (r, "build dir");
  snprintf (exe, sizeof exe, "%s/ploop-graphdriver", r);
  free (r);
  linger_ms = 0;
  snprintf (tmp, sizeof tmp, "/var/tmp/pgd-layers.XXXXXX");
  cr_assert_not_null (mkdtemp (tmp));
  snprintf (home, sizeof home, "%s/home", tmp);
  snprintf (state, sizeof state, "%s/state.json", tmp);
  open_store ();
  struct pgd_init_req req = { .home = home };
  struct pgd_err err = { 0 };
  cr_assert_eq (ops->init (L, &req, &err), 0, "init: %s", err.msg);
}

/* Unmount whatever a failed test left, then delete the temp tree. */
static void
teardown (void)
{
  struct pgd_err err;
  if (L)
    {
      pgd_layers_shutdown (L);
      pgd_layers_close (L);
      L = NULL;
    }
  char cmd[PATH_MAX * 2];
  snprintf (cmd, sizeof cmd,
            "awk '{print $5}' /proc/self/mountinfo | grep '^%s/' | sort -r | "
            "xargs -r -n1 umount -l 2>/dev/null; true",
            tmp);
  if (system (cmd) != 0)
    fprintf (stderr, "cleanup of mounts failed\n");
  if (pgd_rm_rf (tmp, &err) < 0)
    fprintf (stderr, "cleanup: %s\n", err.msg);
}

static void
create (const char *id, const char *parent, bool rw)
{
  struct pgd_create_req req = { .id = id, .parent = parent, .rw = rw };
  struct pgd_err err = { 0 };
  cr_assert_eq (ops->create (L, &req, &err), 0, "create %s: %s", id, err.msg);
}

static char *
get (const char *id)
{
  char *dir = NULL;
  struct pgd_err err = { 0 };
  cr_assert_eq (ops->get (L, id, NULL, &dir, &err), 0, "get %s: %s", id, err.msg);
  return dir;
}

static void
put (const char *id)
{
  struct pgd_err err = { 0 };
  cr_assert_eq (ops->put (L, id, &err), 0, "put %s: %s", id, err.msg);
}

static void
rm (const char *id)
{
  struct pgd_err err = { 0 };
  cr_assert_eq (ops->remove (L, id, &err), 0, "remove %s: %s", id, err.msg);
}

static int
count_entries (const char *dir)
{
  int n = 0;
  DIR *d = opendir (dir);
  struct dirent *de;
  cr_assert_not_null (d);
  while ((de = readdir (d)) != NULL)
    if (strcmp (de->d_name, ".") && strcmp (de->d_name, ".."))
      n++;
  closedir (d);
  return n;
}

static void
write_file (const char *dir, const char *name, const char *text, mode_t mode)
{
  char path[PATH_MAX * 2];
  snprintf (path, sizeof path, "%s/%s", dir, name);
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  cr_assert_geq (fd, 0, "open %s", path);
  cr_assert_eq (write (fd, text, strlen (text)), (ssize_t) strlen (text));
  cr_assert_eq (fchmod (fd, mode), 0);
  close (fd);
}

static void
assert_file (const char *dir, const char *name, const char *text)
{
  char path[PATH_MAX * 2], buf[256] = { 0 };
  snprintf (path, sizeof path, "%s/%s", dir, name);
  int fd = open (path, O_RDONLY);
  cr_assert_geq (fd, 0, "open %s", path);
  cr_assert_geq (read (fd, buf, sizeof buf - 1), 0);
  close (fd);
  cr_assert_str_eq (buf, text, "%s", path);
}

TestSuite (layers, .init = setup, .fini = teardown, .timeout = 600);

Test (layers, create_empty)
{
  struct stat st;
  bool exists = false;
  struct pgd_err err = { 0 };

  create ("empty", NULL, false);
  cr_assert_eq (ops->exists (L, "empty", &exists, &err), 0);
  cr_assert (exists);
  cr_assert_eq (ops->exists (L, "nothere", &exists, &err), 0);
  cr_assert_not (exists);
  char *dir = get ("empty");
  cr_assert_eq (stat (dir, &st), 0);
  cr_assert (S_ISDIR (st.st_mode));
  cr_assert_eq (st.st_mode & 07777, 0755);
  cr_assert_eq (st.st_uid, 0);
  cr_assert_eq (count_entries (dir), 0, "a new layer is empty (no lost+found)");
  free (dir);
  put ("empty");
  rm ("empty");
  cr_assert_eq (ops->exists (L, "empty", &exists, &err), 0);
  cr_assert_not (exists);
}

Test (layers, base_and_snapshot)
{
  struct stat st;

  umask (0);
  create ("Base", NULL, true);
  char *dir = get ("Base");
  char sub[PATH_MAX * 2];
  snprintf (sub, sizeof sub, "%s/a subdir", dir);
  cr_assert_eq (mkdir (sub, 0705 | S_ISVTX), 0);
  cr_assert_eq (lchown (sub, 1, 2), 0);
  write_file (dir, "a file", "Some data", 0222 | S_ISUID);
  put ("Base");
  free (dir);

  create ("Snap", "Base", false);
  dir = get ("Snap");
  snprintf (sub, sizeof sub, "%s/a subdir", dir);
  cr_assert_eq (stat (sub, &st), 0);
  cr_assert_eq (st.st_mode & 07777, 0705 | S_ISVTX);
  cr_assert_eq (st.st_uid, 1);
  cr_assert_eq (st.st_gid, 2);
  snprintf (sub, sizeof sub, "%s/a file", dir);
  cr_assert_eq (stat (sub, &st), 0);
  cr_assert_eq (st.st_mode & 07777, 0222 | S_ISUID);
  cr_assert_eq (count_entries (dir), 2);
  /* the child writes; the parent's view stays as it was */
  write_file (dir, "child-only", "x", 0644);
  put ("Snap");
  free (dir);
  dir = get ("Base");
  cr_assert_eq (count_entries (dir), 2);
  put ("Base");
  free (dir);
  umask (022);
  rm ("Snap");
  rm ("Base");
}

Test (layers, get_put_nest)
{
  create ("nest", NULL, true);
  char *a = get ("nest");
  char *b = get ("nest");
  cr_assert_str_eq (a, b, "Get returns a stable path");
  put ("nest");
  cr_assert (pgd_is_mountpoint (a), "still mounted after one of two Puts");
  put ("nest");
  cr_assert_not (pgd_is_mountpoint (a), "unmounted at zero");
  put ("nest"); /* a Put too many succeeds */
  put ("never-created");
  free (a);
  free (b);
  rm ("nest");
  rm ("nest"); /* idempotent */
}

Test (layers, child_survives_parent_removal)
{
  create ("p", NULL, false);
  char *dir = get ("p");
  write_file (dir, "f", "parent data", 0644);
  put ("p");
  free (dir);
  create ("c", "p", false);
  rm ("p");
  dir = get ("c");
  assert_file (dir, "f", "parent data");
  put ("c");
  free (dir);
  rm ("c");
}

Test (layers, parent_with_child_is_read_only)
{
  struct statvfs sv;

  create ("ro-p", NULL, false);
  create ("ro-c", "ro-p", false);
  char *dir = get ("ro-p");
  cr_assert_eq (statvfs (dir, &sv), 0);
  cr_assert (sv.f_flag & ST_RDONLY, "a layer whose data a child shares is read-only");
  put ("ro-p");
  free (dir);
  rm ("ro-c");
  dir = get ("ro-p");
  cr_assert_eq (statvfs (dir, &sv), 0);
  cr_assert_not (sv.f_flag & ST_RDONLY, "writable again once the child is gone");
  put ("ro-p");
  free (dir);
}

Test (layers, bad_requests_change_nothing)
{
  struct pgd_err err = { 0 };
  struct pgd_kv opt = { "flavour", "sweet" };
  struct pgd_create_req req = { .id = "x", .storage_opt = &opt, .nstorage_opt = 1 };
  bool exists = true;

  cr_assert_neq (ops->create (L, &req, &err), 0);
  cr_assert (strstr (err.msg, "Unknown option flavour"), "%s", err.msg);
  req = (struct pgd_create_req) { .id = "orphan", .parent = "missing" };
  cr_assert_neq (ops->create (L, &req, &err), 0);
  cr_assert (strstr (err.msg, "missing"), "%s", err.msg);
  cr_assert_eq (ops->exists (L, "orphan", &exists, &err), 0);
  cr_assert_not (exists);
  create ("dup", NULL, false);
  req = (struct pgd_create_req) { .id = "dup" };
  cr_assert_neq (ops->create (L, &req, &err), 0, "an existing ID is an error");
  char *dir = NULL;
  cr_assert_neq (ops->get (L, "missing", NULL, &dir, &err), 0);
  cr_assert (strstr (err.msg, "missing"), "%s", err.msg);
  rm ("dup");
}

Test (layers, storage_opt_size)
{
  struct statvfs sv;
  struct pgd_kv opt = { "size", "12G" };
  struct pgd_create_req req = { .id = "big", .storage_opt = &opt, .nstorage_opt = 1, .rw = true };
  struct pgd_err err = { 0 };

  create ("small-base", NULL, false);
  req.parent = "small-base";
  cr_assert_eq (ops->create (L, &req, &err), 0, "%s", err.msg);
  char *dir = get ("big");
  cr_assert_eq (statvfs (dir, &sv), 0);
  /* ext4 keeps some blocks for itself; 12 GiB shows as a bit less */
  uint64_t bytes = (uint64_t) sv.f_blocks * sv.f_frsize;
  cr_assert_gt (bytes, 11500ULL << 20, "size %llu", (unsigned long long) bytes);
  cr_assert_lt (bytes, 12300ULL << 20, "size %llu", (unsigned long long) bytes);
  put ("big");
  free (dir);
  /* smaller than the parent is refused */
  opt.value = "2G";
  req.id = "small";
  cr_assert_neq (ops->create (L, &req, &err), 0);
  cr_assert (strstr (err.msg, "smaller"), "%s", err.msg);
  dir = get ("big");
  put ("big");
  free (dir);
  rm ("big");
}

Test (layers, init_persists_across_restart)
{
  create ("kept", NULL, false);
  char *dir = get ("kept");
  write_file (dir, "f", "still here", 0644);
  /* the plugin process goes away while the layer is mounted */
  pgd_layers_close (L);
  L = NULL;
  open_store (); /* no Init: state comes from the state file */
  bool exists = false;
  struct pgd_err err = { 0 };
  cr_assert_eq (ops->exists (L, "kept", &exists, &err), 0, "%s", err.msg);
  cr_assert (exists);
  char *again = get ("kept");
  cr_assert_str_eq (again, dir, "same path after a restart");
  assert_file (again, "f", "still here");
  put ("kept");
  put ("kept"); /* the adopted reference */
  cr_assert_not (pgd_is_mountpoint (dir));
  free (dir);
  free (again);
  rm ("kept");
}

Test (layers, apply_diff_once)
{
  char tarpath[PATH_MAX * 2], src[PATH_MAX * 2], cmd[PATH_MAX * 5];
  struct pgd_err err = { 0 };
  int64_t size = -1;

  snprintf (src, sizeof src, "%s/src", tmp);
  snprintf (tarpath, sizeof tarpath, "%s/l.tar", tmp);
  snprintf (cmd, sizeof cmd,
            "mkdir -p %s/d && printf hello > %s/d/hello && tar -C %s -cf %s d", src, src, src,
            tarpath);
  cr_assert_eq (system (cmd), 0);
  create ("applied", NULL, false);
  int fd = open (tarpath, O_RDONLY);
  cr_assert_eq (ops->apply_diff (L, "applied", "", fd, &size, &err), 0, "%s", err.msg);
  close (fd);
  cr_assert_eq (size, 5);
  fd = open (tarpath, O_RDONLY);
  cr_assert_neq (ops->apply_diff (L, "applied", "", fd, &size, &err), 0, "twice is refused");
  close (fd);
  cr_assert (strstr (err.msg, "once"), "%s", err.msg);
  char *dir = get ("applied");
  assert_file (dir, "d/hello", "hello");
  put ("applied");
  free (dir);

  /* a truncated stream fails and leaves a layer that refuses to be used */
  create ("cut", NULL, false);
  snprintf (cmd, sizeof cmd, "head -c 700 %s > %s.cut", tarpath, tarpath);
  cr_assert_eq (system (cmd), 0);
  strcat (tarpath, ".cut");
  fd = open (tarpath, O_RDONLY);
  cr_assert_neq (ops->apply_diff (L, "cut", "", fd, &size, &err), 0);
  close (fd);
  cr_assert_neq (ops->get (L, "cut", NULL, &dir, &err), 0);
  cr_assert (strstr (err.msg, "incomplete"), "%s", err.msg);
  rm ("cut");
  rm ("applied");
}

/* The store again with linger MS (state persisted by setup's Init). */
static void
reopen_with_linger (unsigned ms)
{
  pgd_layers_shutdown (L);
  pgd_layers_close (L);
  linger_ms = ms;
  open_store ();
}

/* PID of the image server of mounted layer ID, from <Home>/run/<id>/server.pid. */
static pid_t
server_of (const char *id)
{
  char path[PATH_MAX * 2], *text = NULL;
  size_t len;
  struct pgd_err err;
  snprintf (path, sizeof path, "%s/run/%s/server.pid", home, id);
  cr_assert_eq (pgd_read_file (path, &text, &len, &err), 0, "%s", err.msg);
  long pid = atol (text);
  free (text);
  cr_assert_gt (pid, 1, "%s", path);
  return (pid_t) pid;
}

/* True while PID runs (exists and is not a zombie waiting for init to reap it). */
static bool
running (pid_t pid)
{
  char path[64], buf[256] = "";
  snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
  int fd = open (path, O_RDONLY);
  if (fd < 0)
    return false;
  ssize_t n = read (fd, buf, sizeof buf - 1);
  close (fd);
  const char *paren = n > 0 ? strrchr (buf, ')') : NULL;
  return paren && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
}

/* Wait (bounded, not a performance limit) until DIR is no longer a mount point. */
static bool
wait_unmounted (const char *dir)
{
  for (int i = 0; i < 1200; i++)
    {
      if (!pgd_is_mountpoint (dir))
        return true;
      usleep (50 * 1000);
    }
  return false;
}

Test (layers, idle_mount_is_reused_then_reaped)
{
  reopen_with_linger (300);
  create ("idle", NULL, true);
  char *a = get ("idle");
  write_file (a, "f", "kept\n", 0644);
  pid_t first = server_of ("idle");
  put ("idle");
  cr_assert (pgd_is_mountpoint (a), "the last Put left no idle mount");
  char *b = get ("idle");
  cr_assert_str_eq (a, b);
  cr_assert_eq (server_of ("idle"), first, "a Get within the linger mounted again");
  assert_file (b, "f", "kept\n");
  put ("idle");
  cr_assert (wait_unmounted (a), "the reaper never unmounted the idle layer");
  for (int i = 0; i < 1200 && running (first); i++) /* the server exits last */
    usleep (50 * 1000);
  cr_assert_not (running (first), "the image server outlived its unmount");
  free (b);
  b = get ("idle"); /* mounts again, with a new server */
  cr_assert_neq (server_of ("idle"), first);
  assert_file (b, "f", "kept\n");
  put ("idle");
  rm ("idle");
  cr_assert_not (pgd_is_mountpoint (a));
  free (a);
  free (b);
}

/* A child of an idle read-write layer: Create closes the parent first (the clone shares
   its deltas); afterwards the parent mounts read-only. */
Test (layers, idle_parent_is_closed_for_a_child)
{
  reopen_with_linger (600000);
  create ("p", NULL, true);
  char *p = get ("p");
  write_file (p, "from-parent", "p\n", 0644);
  put ("p");
  cr_assert (pgd_is_mountpoint (p));
  create ("c", "p", true);
  cr_assert_not (pgd_is_mountpoint (p), "the parent stayed mounted read-write under a clone");
  char *c = get ("c");
  assert_file (c, "from-parent", "p\n");
  put ("c");
  free (p);
  p = get ("p");
  char path[PATH_MAX * 2];
  snprintf (path, sizeof path, "%s/new", p);
  cr_assert_lt (open (path, O_WRONLY | O_CREAT, 0644), 0);
  cr_assert_eq (errno, EROFS, "the parent of a clone must be read-only");
  put ("p");
  rm ("c");
  rm ("p");
  free (p);
  free (c);
}

Test (layers, remove_and_shutdown_close_idle_mounts)
{
  reopen_with_linger (600000);
  create ("x", NULL, true);
  create ("y", NULL, true);
  char *x = get ("x");
  char *y = get ("y");
  put ("x");
  put ("y");
  pid_t sy = server_of ("y");
  rm ("x");
  cr_assert_not (pgd_is_mountpoint (x), "Remove left the idle mount");
  pgd_layers_shutdown (L);
  cr_assert_not (pgd_is_mountpoint (y), "shutdown left the idle mount");
  cr_assert_not (running (sy), "shutdown left the image server");
  rm ("y");
  free (x);
  free (y);
}

/* An idle mount whose image server died is not handed out: Get mounts it again. */
Test (layers, idle_mount_with_dead_server_is_remounted)
{
  reopen_with_linger (600000);
  create ("z", NULL, true);
  char *z = get ("z");
  write_file (z, "f", "durable\n", 0644);
  int fd = open (z, O_RDONLY | O_DIRECTORY);
  cr_assert_geq (fd, 0);
  cr_assert_eq (syncfs (fd), 0);
  close (fd);
  put ("z");
  pid_t dead = server_of ("z");
  cr_assert_eq (kill (dead, SIGKILL), 0);
  for (int i = 0; i < 1200 && running (dead); i++)
    usleep (50 * 1000);
  char *again = get ("z");
  cr_assert_neq (server_of ("z"), dead, "a dead server's mount was handed out");
  assert_file (again, "f", "durable\n");
  put ("z");
  rm ("z");
  free (z);
  free (again);
}
