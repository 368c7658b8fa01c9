/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Crash safety of the layer store on the real user engine (PLOOP.md §2.3,
   PROTOCOL.md §4.2, §9.2): a plugin process killed with -9 in the middle of an
   ApplyDiff, and an image server killed with -9 while its layer is mounted. After
   each, the store reopens, nothing of the broken layer is left running or mounted
   once it is put or removed, and its siblings keep working. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/layers.h"
#include "store_fixture.h"
#include "ustar.h"
#include "util.h"

static const struct pgd_ops *ops = &pgd_layers_ops;
static struct tl_store S;
static pid_t child = -1;

static void
setup (void)
{
  tl_store_setup (&S, "crash");
}

/* Whatever a test left: the child, then everything of the store's. */
static void
teardown (void)
{
  if (child > 0)
    {
      kill (child, SIGKILL);
      waitpid (child, NULL, 0);
      child = -1;
    }
  tl_store_teardown (&S);
}

TestSuite (crash, .init = setup, .fini = teardown, .timeout = 600);

/* Does TEXT contain "<home>/<sub>/<id>" followed by '/', '\n', ' ' or its end? */
static bool
names_layer (const char *text, const char *sub, const char *id)
{
  char needle[PATH_MAX + 300];
  snprintf (needle, sizeof needle, "%s/%s/%s", S.home, sub, id);
  for (const char *p = strstr (text, needle); p; p = strstr (p + 1, needle))
    {
      char c = p[strlen (needle)];
      if (c == '\0' || c == '/' || c == '\n' || c == ' ')
        return true;
    }
  return false;
}

/* Assert nothing of layer ID is mounted, attached or running. */
static void
assert_nothing_left (const char *id)
{
  char *info = NULL;
  size_t len = 0;
  struct pgd_err err;

  /* mounts: the layer's ext4 at mnt/<id>, its server's FUSE under run/<id> */
  cr_assert_eq (pgd_read_file ("/proc/self/mountinfo", &info, &len, &err), 0, "%s", err.msg);
  cr_assert_not (names_layer (info, "mnt", id), "%s still mounted:\n%s", id, info);
  cr_assert_not (names_layer (info, "run", id), "%s's FUSE still mounted:\n%s", id, info);
  free (info);

  /* loop devices whose backing file is the layer's disk */
  DIR *d = opendir ("/sys/block");
  struct dirent *de;
  cr_assert_not_null (d);
  while ((de = readdir (d)) != NULL)
    {
      char path[PATH_MAX];
      char *backing = NULL;
      if (strncmp (de->d_name, "loop", 4) != 0)
        continue;
      snprintf (path, sizeof path, "/sys/block/%s/loop/backing_file", de->d_name);
      if (pgd_read_file (path, &backing, NULL, &err) < 0)
        continue;
      bool ours = names_layer (backing, "run", id) || names_layer (backing, "layers", id);
      cr_assert_not (ours, "%s still backs %s", backing, de->d_name);
      free (backing);
    }
  closedir (d);

  /* image servers of the layer */
  char dir[PATH_MAX + 300];
  pid_t pids[8];
  snprintf (dir, sizeof dir, "%s/layers/%s", S.home, id);
  int n = tl_servers_under (dir, pids, 8);
  cr_assert_eq (n, 0, "image server %d of %s still running", n ? (int)pids[0] : 0, id);
}

/* Write TEXT to DIR/NAME and make it durable (file and directory fsync'ed). */
static void
write_durable (const char *dir, const char *name, const char *text)
{
  char path[PATH_MAX * 2];
  snprintf (path, sizeof path, "%s/%s", dir, name);
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  cr_assert_geq (fd, 0, "open %s", path);
  cr_assert_eq (write (fd, text, strlen (text)), (ssize_t)strlen (text));
  cr_assert_eq (fsync (fd), 0, "fsync %s", path);
  close (fd);
  fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  cr_assert_geq (fd, 0);
  cr_assert_eq (fsync (fd), 0, "fsync %s", dir);
  close (fd);
}

static void
assert_file (const char *dir, const char *name, const char *text)
{
  char path[PATH_MAX * 2], buf[256] = { 0 };
  snprintf (path, sizeof path, "%s/%s", dir, name);
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  cr_assert_geq (fd, 0, "open %s: %s", path, strerror (errno));
  cr_assert_geq (read (fd, buf, sizeof buf - 1), 0, "read %s: %s", path, strerror (errno));
  close (fd);
  cr_assert_str_eq (buf, text, "%s", path);
}

/* ---- a tar made on the fly ------------------------------------------------------------ */

/* write(2) all LEN bytes to FD (a pipe: pc_send_all's send() wants a socket) */
static int
write_all (int fd, const void *buf, size_t len)
{
  const char *p = buf;
  while (len > 0)
    {
      ssize_t n = write (fd, p, len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return -1;
      p += n;
      len -= (size_t)n;
    }
  return 0;
}

/* Write file NAME of SIZE pseudo-random bytes (SIZE a multiple of 512) as a tar entry. */
static int
tar_file (int fd, const char *name, size_t size, unsigned seed)
{
  static char block[65536];
  char h[512];

  tl_ustar_header (h, name, size);
  if (write_all (fd, h, sizeof h) < 0)
    return -1;
  for (size_t off = 0; off < size; off += sizeof block)
    {
      for (size_t i = 0; i < sizeof block; i++)
        {
          seed = seed * 1103515245u + 12345u;
          block[i] = (char)(seed >> 16);
        }
      size_t n = size - off < sizeof block ? size - off : sizeof block;
      if (write_all (fd, block, n) < 0)
        return -1;
    }
  return 0;
}

static int
tar_end (int fd)
{
  static const char zero[1024];
  return write_all (fd, zero, sizeof zero);
}

/* ---- tests ----------------------------------------------------------------------------- */

/* The plugin process dies (kill -9) while an ApplyDiff of a large tar is under way. */
Test (crash, apply_diff_killed_midway)
{
  /* a 200 MiB tar (FILES x 1 MiB), cut in its middle */
  enum
  {
    FILES = 200,
    FILE_SIZE = 1 << 20,
    KILL_AFTER = FILES / 2
  };
  int pfd[2];

  /* the parent lets go of the store: the child is "the plugin" now */
  tl_store_close (&S);
  cr_assert_eq (pipe2 (pfd, O_CLOEXEC), 0);
  child = fork ();
  cr_assert_geq (child, 0);
  if (child == 0)
    {
      struct pgd_err err = { 0 };
      int64_t size;
      close (pfd[1]);
      if (tl_store_open_rc (&S, &err) < 0)
        _exit (2);
      struct pgd_create_req req = { .id = "big" };
      if (ops->create (S.l, &req, &err) < 0)
        _exit (3);
      ops->apply_diff (S.l, "big", "", pfd[0], &size, &err);
      /* never reached in this test: the parent kills us first */
      _exit (4);
    }
  close (pfd[0]);
  /* writes block until the child reads: once well past the pipe's buffer, the apply
     is running; kill it in the middle of the stream */
  for (int i = 0; i < KILL_AFTER; i++)
    {
      char name[32];
      snprintf (name, sizeof name, "f%03d", i);
      cr_assert_eq (tar_file (pfd[1], name, FILE_SIZE, (unsigned)i), 0,
                    "the child stopped reading after %d files", i);
    }
  cr_assert_eq (kill (child, SIGKILL), 0);
  int status;
  cr_assert_eq (waitpid (child, &status, 0), child);
  child = -1;
  cr_assert (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL,
             "the child ended on its own (status %#x) before the kill", status);
  close (pfd[1]);

  /* "the plugin restarts": recovery takes the incomplete layer down */
  tl_store_open (&S);
  bool exists = false;
  struct pgd_err err = { 0 };
  cr_assert_eq (ops->exists (S.l, "big", &exists, &err), 0, "%s", err.msg);
  if (exists)
    {
      char *dir = NULL;
      cr_assert_neq (ops->get (S.l, "big", NULL, &dir, &err), 0, "Get of a cut layer succeeded");
      cr_assert (strstr (err.msg, "incomplete") != NULL, "Get refused with: %s", err.msg);
    }
  assert_nothing_left ("big");
  tl_remove (&S, "big");
  assert_nothing_left ("big");
  cr_assert_eq (ops->exists (S.l, "big", &exists, &err), 0, "%s", err.msg);
  cr_assert_not (exists, "big exists after Remove");

  /* the same ID works again from scratch */
  tl_create (&S, "big", NULL, false);
  cr_assert_eq (pipe2 (pfd, O_CLOEXEC), 0);
  child = fork ();
  cr_assert_geq (child, 0);
  if (child == 0)
    {
      close (pfd[0]);
      int rc = tar_file (pfd[1], "small", 4096, 7) < 0 || tar_end (pfd[1]) < 0;
      _exit (rc);
    }
  close (pfd[1]);
  int64_t size = 0;
  cr_assert_eq (ops->apply_diff (S.l, "big", "", pfd[0], &size, &err), 0, "apply: %s", err.msg);
  close (pfd[0]);
  cr_assert_eq (waitpid (child, &status, 0), child);
  child = -1;
  cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0);
  cr_assert_eq (size, 4096);
  char *dir = tl_get (&S, "big");
  struct stat st;
  char path[PATH_MAX * 2];
  snprintf (path, sizeof path, "%s/small", dir);
  cr_assert_eq (stat (path, &st), 0, "%s", path);
  cr_assert_eq (st.st_size, 4096);
  snprintf (path, sizeof path, "%s/f000", dir);
  cr_assert_neq (stat (path, &st), 0, "content of the cut apply survived");
  tl_put (&S, "big");
  free (dir);
  tl_remove (&S, "big");
  assert_nothing_left ("big");
}

/* PID of the image server of mounted layer ID, from <Home>/run/<id>/server.pid. */
static pid_t
server_pid (const char *id)
{
  char path[PATH_MAX * 2];
  char *text = NULL;
  struct pgd_err err;
  long pid = 0;

  snprintf (path, sizeof path, "%s/run/%s/server.pid", S.home, id);
  cr_assert_eq (pgd_read_file (path, &text, NULL, &err), 0, "%s", err.msg);
  cr_assert_eq (sscanf (text, "%ld", &pid), 1, "%s: %s", path, text);
  free (text);
  cr_assert_gt (pid, 1);
  return (pid_t)pid;
}

/* Create A and B, mount both, write durable data, kill -9 A's server. */
static void
kill_one_server (char **dir_a, char **dir_b)
{
  tl_create (&S, "a", NULL, false);
  tl_create (&S, "b", NULL, false);
  *dir_a = tl_get (&S, "a");
  *dir_b = tl_get (&S, "b");
  write_durable (*dir_a, "kept", "fsynced before the kill\n");
  write_durable (*dir_b, "kept", "sibling data\n");
  pid_t pid = server_pid ("a");
  cr_assert_eq (kill (pid, SIGKILL), 0);
  tl_wait_gone (pid);
  /* the sibling's stack is untouched */
  write_durable (*dir_b, "after", "written after the kill\n");
  assert_file (*dir_b, "kept", "sibling data\n");
  assert_file (*dir_b, "after", "written after the kill\n");
}

/* After a kill -9 of A's server: B's fresh Get works. */
static void
sibling_fresh_get (void)
{
  tl_put (&S, "b");
  assert_nothing_left ("b");
  char *dir = tl_get (&S, "b");
  assert_file (dir, "kept", "sibling data\n");
  assert_file (dir, "after", "written after the kill\n");
  tl_put (&S, "b");
  free (dir);
  tl_remove (&S, "b");
  assert_nothing_left ("b");
}

Test (crash, server_killed_then_put_and_remounted)
{
  char *dir_a, *dir_b;
  struct pgd_err err = { 0 };

  kill_one_server (&dir_a, &dir_b);
  /* Put may report the dead server; either way nothing of A is left behind */
  if (ops->put (S.l, "a", &err) < 0)
    cr_log_info ("Put of the layer whose server died: %s", err.msg);
  assert_nothing_left ("a");
  sibling_fresh_get ();

  /* the next Get mounts again, repairs the image (PLOOP.md §2.3), and the fsync'ed
     data is there */
  char *dir = tl_get (&S, "a");
  cr_assert (pgd_is_mountpoint (dir), "Get after a failed Put returned an unmounted %s", dir);
  assert_file (dir, "kept", "fsynced before the kill\n");
  write_durable (dir, "new", "after repair\n");
  tl_put (&S, "a");
  free (dir);
  dir = tl_get (&S, "a");
  assert_file (dir, "new", "after repair\n");
  tl_put (&S, "a");
  free (dir);
  tl_remove (&S, "a");
  assert_nothing_left ("a");
  free (dir_a);
  free (dir_b);
}

Test (crash, server_killed_then_removed)
{
  char *dir_a, *dir_b;
  struct pgd_err err = { 0 };

  kill_one_server (&dir_a, &dir_b);
  /* dockerd's order on rm: Put, then Remove */
  if (ops->put (S.l, "a", &err) < 0)
    cr_log_info ("Put of the layer whose server died: %s", err.msg);
  tl_remove (&S, "a");
  assert_nothing_left ("a");
  bool exists = true;
  cr_assert_eq (ops->exists (S.l, "a", &exists, &err), 0, "%s", err.msg);
  cr_assert_not (exists);
  sibling_fresh_get ();
  free (dir_a);
  free (dir_b);
}

Test (crash, server_killed_then_plugin_restarts)
{
  char *dir_a, *dir_b;

  kill_one_server (&dir_a, &dir_b);
  /* the plugin process goes away too and a new one opens the store */
  tl_store_close (&S);
  tl_store_open (&S);
  /* not adopted: the restart took the dead mount down at once (a live sibling is) */
  assert_nothing_left ("a");
  tl_put (&S, "a"); /* dockerd's Put of its old reference still succeeds */
  sibling_fresh_get ();
  char *dir = tl_get (&S, "a");
  assert_file (dir, "kept", "fsynced before the kill\n");
  tl_put (&S, "a");
  free (dir);
  tl_remove (&S, "a");
  assert_nothing_left ("a");
  free (dir_a);
  free (dir_b);
}
