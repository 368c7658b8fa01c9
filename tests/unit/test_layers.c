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
#include "store_fixture.h"
#include "util.h"

static const struct pgd_ops *ops = &pgd_layers_ops;
static struct tl_store S;

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
  cr_assert_eq (write (fd, text, strlen (text)), (ssize_t)strlen (text));
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

static void
setup (void)
{
  tl_store_setup (&S, "layers");
}

static void
teardown (void)
{
  tl_store_teardown (&S);
}

TestSuite (layers, .init = setup, .fini = teardown, .timeout = 600);

/* The store checks IDs itself (the CLI and other faces call it without the HTTP edge):
   an ID or parent that is not a plain name is refused, and nothing appears outside
   Home's layer directories. */
Test (layers, store_refuses_bad_ids)
{
  static const char *const bad[] = { "", ".", "..", "../escape", "a/b", "x\n" };
  struct pgd_err err = { 0 };
  char *dir = NULL;
  bool exists;
  int64_t size;
  char outside[PATH_MAX + 32];

  tl_create (&S, "good", NULL, false);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    {
      struct pgd_create_req req = { .id = bad[i] };
      cr_expect_lt (ops->create (S.l, &req, &err), 0, "create \"%s\" was accepted", bad[i]);
      cr_expect (strstr (err.msg, "invalid ID"), "create \"%s\": %s", bad[i], err.msg);
      struct pgd_create_req child = { .id = "child", .parent = bad[i] };
      if (bad[i][0])
        cr_expect_lt (ops->create (S.l, &child, &err), 0, "parent \"%s\" was accepted", bad[i]);
      cr_expect_lt (ops->get (S.l, bad[i], NULL, &dir, &err), 0, "get \"%s\"", bad[i]);
      cr_expect_lt (ops->put (S.l, bad[i], &err), 0, "put \"%s\"", bad[i]);
      cr_expect_lt (ops->remove (S.l, bad[i], &err), 0, "remove \"%s\"", bad[i]);
      cr_expect_lt (ops->exists (S.l, bad[i], &exists, &err), 0, "exists \"%s\"", bad[i]);
      if (bad[i][0])
        cr_expect_lt (ops->diff_size (S.l, "good", bad[i], &size, &err), 0,
                      "diff_size with parent \"%s\"", bad[i]);
    }
  cr_expect_eq (ops->exists (S.l, "child", &exists, &err), 0, "%s", err.msg);
  cr_expect (!exists, "a child of a bad parent was made");
  snprintf (outside, sizeof outside, "%s/escape", S.tmp);
  cr_expect_neq (access (outside, F_OK), 0, "%s was created", outside);
}

Test (layers, create_empty)
{
  struct stat st;
  bool exists = false;
  struct pgd_err err = { 0 };

  tl_create (&S, "empty", NULL, false);
  cr_assert_eq (ops->exists (S.l, "empty", &exists, &err), 0);
  cr_assert (exists);
  cr_assert_eq (ops->exists (S.l, "nothere", &exists, &err), 0);
  cr_assert_not (exists);
  char *dir = tl_get (&S, "empty");
  cr_assert_eq (stat (dir, &st), 0);
  cr_assert (S_ISDIR (st.st_mode));
  cr_assert_eq (st.st_mode & 07777, 0755);
  cr_assert_eq (st.st_uid, 0);
  cr_assert_eq (count_entries (dir), 0, "a new layer is empty (no lost+found)");
  free (dir);
  tl_put (&S, "empty");
  tl_remove (&S, "empty");
  cr_assert_eq (ops->exists (S.l, "empty", &exists, &err), 0);
  cr_assert_not (exists);
}

Test (layers, base_and_snapshot)
{
  struct stat st;

  umask (0);
  tl_create (&S, "Base", NULL, true);
  char *dir = tl_get (&S, "Base");
  char sub[PATH_MAX * 2];
  snprintf (sub, sizeof sub, "%s/a subdir", dir);
  cr_assert_eq (mkdir (sub, 0705 | S_ISVTX), 0);
  cr_assert_eq (lchown (sub, 1, 2), 0);
  write_file (dir, "a file", "Some data", 0222 | S_ISUID);
  tl_put (&S, "Base");
  free (dir);

  tl_create (&S, "Snap", "Base", false);
  dir = tl_get (&S, "Snap");
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
  tl_put (&S, "Snap");
  free (dir);
  dir = tl_get (&S, "Base");
  cr_assert_eq (count_entries (dir), 2);
  tl_put (&S, "Base");
  free (dir);
  umask (022);
  tl_remove (&S, "Snap");
  tl_remove (&S, "Base");
}

Test (layers, get_put_nest)
{
  tl_create (&S, "nest", NULL, true);
  char *a = tl_get (&S, "nest");
  char *b = tl_get (&S, "nest");
  cr_assert_str_eq (a, b, "Get returns a stable path");
  tl_put (&S, "nest");
  cr_assert (pgd_is_mountpoint (a), "still mounted after one of two Puts");
  tl_put (&S, "nest");
  cr_assert_not (pgd_is_mountpoint (a), "unmounted at zero");
  /* a closed layer keeps nothing outside layers/: no mount point, no runtime dir */
  char run[PATH_MAX * 2];
  snprintf (run, sizeof run, "%s/run/nest", S.home);
  cr_assert (access (a, F_OK) < 0 && errno == ENOENT, "%s is left", a);
  cr_assert (access (run, F_OK) < 0 && errno == ENOENT, "%s is left", run);
  char *c = tl_get (&S, "nest");
  cr_assert_str_eq (a, c, "Get returns the same path after an unmount");
  cr_assert (pgd_is_mountpoint (c));
  tl_put (&S, "nest");
  free (c);
  tl_put (&S, "nest"); /* a Put too many succeeds */
  tl_put (&S, "never-created");
  free (a);
  free (b);
  tl_remove (&S, "nest");
  tl_remove (&S, "nest"); /* idempotent */
}

Test (layers, child_survives_parent_removal)
{
  tl_create (&S, "p", NULL, false);
  char *dir = tl_get (&S, "p");
  write_file (dir, "f", "parent data", 0644);
  tl_put (&S, "p");
  free (dir);
  tl_create (&S, "c", "p", false);
  tl_remove (&S, "p");
  dir = tl_get (&S, "c");
  assert_file (dir, "f", "parent data");
  tl_put (&S, "c");
  free (dir);
  tl_remove (&S, "c");
}

Test (layers, parent_with_child_is_read_only)
{
  struct statvfs sv;

  tl_create (&S, "ro-p", NULL, false);
  tl_create (&S, "ro-c", "ro-p", false);
  char *dir = tl_get (&S, "ro-p");
  cr_assert_eq (statvfs (dir, &sv), 0);
  cr_assert (sv.f_flag & ST_RDONLY, "a layer whose data a child shares is read-only");
  tl_put (&S, "ro-p");
  free (dir);
  tl_remove (&S, "ro-c");
  dir = tl_get (&S, "ro-p");
  cr_assert_eq (statvfs (dir, &sv), 0);
  cr_assert_not (sv.f_flag & ST_RDONLY, "writable again once the child is gone");
  tl_put (&S, "ro-p");
  free (dir);
}

Test (layers, bad_requests_change_nothing)
{
  struct pgd_err err = { 0 };
  struct pgd_kv opt = { "flavour", "sweet" };
  struct pgd_create_req req = { .id = "x", .storage_opt = &opt, .nstorage_opt = 1 };
  bool exists = true;

  cr_assert_neq (ops->create (S.l, &req, &err), 0);
  cr_assert (strstr (err.msg, "Unknown option flavour"), "%s", err.msg);
  req = (struct pgd_create_req){ .id = "orphan", .parent = "missing" };
  cr_assert_neq (ops->create (S.l, &req, &err), 0);
  cr_assert (strstr (err.msg, "missing"), "%s", err.msg);
  cr_assert_eq (ops->exists (S.l, "orphan", &exists, &err), 0);
  cr_assert_not (exists);
  tl_create (&S, "dup", NULL, false);
  req = (struct pgd_create_req){ .id = "dup" };
  cr_assert_neq (ops->create (S.l, &req, &err), 0, "an existing ID is an error");
  char *dir = NULL;
  cr_assert_neq (ops->get (S.l, "missing", NULL, &dir, &err), 0);
  cr_assert (strstr (err.msg, "missing"), "%s", err.msg);
  tl_remove (&S, "dup");
}

Test (layers, storage_opt_size)
{
  struct statvfs sv;
  struct pgd_kv opt = { "size", "12G" };
  struct pgd_create_req req = { .id = "big", .storage_opt = &opt, .nstorage_opt = 1, .rw = true };
  struct pgd_err err = { 0 };

  tl_create (&S, "small-base", NULL, false);
  req.parent = "small-base";
  cr_assert_eq (ops->create (S.l, &req, &err), 0, "%s", err.msg);
  char *dir = tl_get (&S, "big");
  cr_assert_eq (statvfs (dir, &sv), 0);
  /* ext4 keeps some blocks for itself; 12 GiB shows as a bit less */
  uint64_t bytes = (uint64_t)sv.f_blocks * sv.f_frsize;
  cr_assert_gt (bytes, 11500ULL << 20, "size %llu", (unsigned long long)bytes);
  cr_assert_lt (bytes, 12300ULL << 20, "size %llu", (unsigned long long)bytes);
  tl_put (&S, "big");
  free (dir);
  /* smaller than the parent is refused */
  opt.value = "2G";
  req.id = "small";
  cr_assert_neq (ops->create (S.l, &req, &err), 0);
  cr_assert (strstr (err.msg, "smaller"), "%s", err.msg);
  dir = tl_get (&S, "big");
  tl_put (&S, "big");
  free (dir);
  tl_remove (&S, "big");
}

Test (layers, init_persists_across_restart)
{
  tl_create (&S, "kept", NULL, false);
  char *dir = tl_get (&S, "kept");
  write_file (dir, "f", "still here", 0644);
  /* the plugin process goes away while the layer is mounted */
  tl_store_close (&S);
  tl_store_open (&S); /* no Init: state comes from the state file */
  bool exists = false;
  struct pgd_err err = { 0 };
  cr_assert_eq (ops->exists (S.l, "kept", &exists, &err), 0, "%s", err.msg);
  cr_assert (exists);
  char *again = tl_get (&S, "kept");
  cr_assert_str_eq (again, dir, "same path after a restart");
  assert_file (again, "f", "still here");
  tl_put (&S, "kept");
  tl_put (&S, "kept"); /* the adopted reference */
  cr_assert_not (pgd_is_mountpoint (dir));
  free (dir);
  free (again);
  tl_remove (&S, "kept");
}

Test (layers, apply_diff_once)
{
  char tarpath[PATH_MAX * 2], src[PATH_MAX * 2], cmd[PATH_MAX * 5];
  struct pgd_err err = { 0 };
  int64_t size = -1;

  snprintf (src, sizeof src, "%s/src", S.tmp);
  snprintf (tarpath, sizeof tarpath, "%s/l.tar", S.tmp);
  snprintf (cmd, sizeof cmd, "mkdir -p %s/d && printf hello > %s/d/hello && tar -C %s -cf %s d",
            src, src, src, tarpath);
  cr_assert_eq (system (cmd), 0);
  tl_create (&S, "applied", NULL, false);
  int fd = open (tarpath, O_RDONLY);
  cr_assert_eq (ops->apply_diff (S.l, "applied", "", fd, &size, &err), 0, "%s", err.msg);
  close (fd);
  cr_assert_eq (size, 5);
  fd = open (tarpath, O_RDONLY);
  cr_assert_neq (ops->apply_diff (S.l, "applied", "", fd, &size, &err), 0, "twice is refused");
  close (fd);
  cr_assert (strstr (err.msg, "once"), "%s", err.msg);
  char *dir = tl_get (&S, "applied");
  assert_file (dir, "d/hello", "hello");
  tl_put (&S, "applied");
  free (dir);

  /* a truncated stream fails and leaves a layer that refuses to be used */
  tl_create (&S, "cut", NULL, false);
  snprintf (cmd, sizeof cmd, "head -c 700 %s > %s.cut", tarpath, tarpath);
  cr_assert_eq (system (cmd), 0);
  strcat (tarpath, ".cut");
  fd = open (tarpath, O_RDONLY);
  cr_assert_neq (ops->apply_diff (S.l, "cut", "", fd, &size, &err), 0);
  close (fd);
  cr_assert_neq (ops->get (S.l, "cut", NULL, &dir, &err), 0);
  cr_assert (strstr (err.msg, "incomplete"), "%s", err.msg);
  tl_remove (&S, "cut");
  tl_remove (&S, "applied");
}

/* The store again with linger MS (state persisted by setup's Init). */
static void
reopen_with_linger (unsigned ms)
{
  pgd_layers_shutdown (S.l);
  pgd_layers_close (S.l);
  S.linger_ms = ms;
  tl_store_open (&S);
}

/* PID of the image server of mounted layer ID, from <Home>/run/<id>/server.pid. */
static pid_t
server_of (const char *id)
{
  char path[PATH_MAX * 2], *text = NULL;
  size_t len;
  struct pgd_err err;
  snprintf (path, sizeof path, "%s/run/%s/server.pid", S.home, id);
  cr_assert_eq (pgd_read_file (path, &text, &len, &err), 0, "%s", err.msg);
  long pid = atol (text);
  free (text);
  cr_assert_gt (pid, 1, "%s", path);
  return (pid_t)pid;
}

/* True while PID runs (exists and is not a zombie waiting for init to reap it). */
static bool
running (pid_t pid)
{
  char path[64], buf[256] = "";
  snprintf (path, sizeof path, "/proc/%d/stat", (int)pid);
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
  tl_create (&S, "idle", NULL, true);
  char *a = tl_get (&S, "idle");
  write_file (a, "f", "kept\n", 0644);
  pid_t first = server_of ("idle");
  tl_put (&S, "idle");
  cr_assert (pgd_is_mountpoint (a), "the last Put left no idle mount");
  char *b = tl_get (&S, "idle");
  cr_assert_str_eq (a, b);
  cr_assert_eq (server_of ("idle"), first, "a Get within the linger mounted again");
  assert_file (b, "f", "kept\n");
  tl_put (&S, "idle");
  cr_assert (wait_unmounted (a), "the reaper never unmounted the idle layer");
  for (int i = 0; i < 1200 && running (first); i++) /* the server exits last */
    usleep (50 * 1000);
  cr_assert_not (running (first), "the image server outlived its unmount");
  free (b);
  b = tl_get (&S, "idle"); /* mounts again, with a new server */
  cr_assert_neq (server_of ("idle"), first);
  assert_file (b, "f", "kept\n");
  tl_put (&S, "idle");
  tl_remove (&S, "idle");
  cr_assert_not (pgd_is_mountpoint (a));
  free (a);
  free (b);
}

/* A child of an idle read-write layer: Create closes the parent first (the clone shares
   its deltas); afterwards the parent mounts read-only. */
Test (layers, idle_parent_is_closed_for_a_child)
{
  reopen_with_linger (600000);
  tl_create (&S, "p", NULL, true);
  char *p = tl_get (&S, "p");
  write_file (p, "from-parent", "p\n", 0644);
  tl_put (&S, "p");
  cr_assert (pgd_is_mountpoint (p));
  tl_create (&S, "c", "p", true);
  cr_assert_not (pgd_is_mountpoint (p), "the parent stayed mounted read-write under a clone");
  char *c = tl_get (&S, "c");
  assert_file (c, "from-parent", "p\n");
  tl_put (&S, "c");
  free (p);
  p = tl_get (&S, "p");
  char path[PATH_MAX * 2];
  snprintf (path, sizeof path, "%s/new", p);
  cr_assert_lt (open (path, O_WRONLY | O_CREAT, 0644), 0);
  cr_assert_eq (errno, EROFS, "the parent of a clone must be read-only");
  tl_put (&S, "p");
  tl_remove (&S, "c");
  tl_remove (&S, "p");
  free (p);
  free (c);
}

Test (layers, remove_and_shutdown_close_idle_mounts)
{
  reopen_with_linger (600000);
  tl_create (&S, "x", NULL, true);
  tl_create (&S, "y", NULL, true);
  char *x = tl_get (&S, "x");
  char *y = tl_get (&S, "y");
  tl_put (&S, "x");
  tl_put (&S, "y");
  pid_t sy = server_of ("y");
  tl_remove (&S, "x");
  cr_assert_not (pgd_is_mountpoint (x), "Remove left the idle mount");
  pgd_layers_shutdown (S.l);
  cr_assert_not (pgd_is_mountpoint (y), "shutdown left the idle mount");
  cr_assert_not (running (sy), "shutdown left the image server");
  tl_remove (&S, "y");
  free (x);
  free (y);
}

/* An idle mount whose image server died is not handed out: Get mounts it again. */
Test (layers, idle_mount_with_dead_server_is_remounted)
{
  reopen_with_linger (600000);
  tl_create (&S, "z", NULL, true);
  char *z = tl_get (&S, "z");
  write_file (z, "f", "durable\n", 0644);
  int fd = open (z, O_RDONLY | O_DIRECTORY);
  cr_assert_geq (fd, 0);
  cr_assert_eq (syncfs (fd), 0);
  close (fd);
  tl_put (&S, "z");
  pid_t dead = server_of ("z");
  cr_assert_eq (kill (dead, SIGKILL), 0);
  for (int i = 0; i < 1200 && running (dead); i++)
    usleep (50 * 1000);
  char *again = tl_get (&S, "z");
  cr_assert_neq (server_of ("z"), dead, "a dead server's mount was handed out");
  assert_file (again, "f", "durable\n");
  tl_put (&S, "z");
  tl_remove (&S, "z");
  free (z);
  free (again);
}
