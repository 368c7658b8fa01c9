/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The image sub-commands of the real binary, as a person uses them by hand: create,
   info, mount, write, umount, clone, read-only mount, check, grow + resize; bad input
   gets a message and changes nothing; nothing is left mounted or running. Needs root,
   FUSE and loop devices. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto_client.h"
#include "util.h"

/* Only its directory is used: pc_stop unmounts, detaches and kills what is below it. */
static struct pc_server tmp;
static char bin[PATH_MAX];
static char out[16384]; /* stdout and stderr of the last command */

static void
setup (void)
{
  snprintf (tmp.dir, sizeof tmp.dir, "/var/tmp/pgd-cli.XXXXXX");
  cr_assert_not_null (mkdtemp (tmp.dir));
  cr_assert_eq (pc_binary (bin), 0);
}

static void
teardown (void)
{
  pc_stop (&tmp);
}

TestSuite (cli, .init = setup, .fini = teardown);

/* Run the binary with the NULL-terminated arguments; its output in OUT; returns the
   exit status (-1 when it did not exit normally). */
static int __attribute__ ((sentinel)) cli (const char *arg, ...)
{
  const char *argv[16] = { bin };
  va_list ap;
  int n = 1, fds[2];

  va_start (ap, arg);
  for (const char *a = arg; a && n < 15; a = va_arg (ap, const char *))
    argv[n++] = a;
  va_end (ap);
  argv[n] = NULL;
  cr_assert_eq (pipe2 (fds, O_CLOEXEC), 0);
  pid_t pid = fork ();
  cr_assert_geq (pid, 0);
  if (pid == 0)
    {
      dup2 (fds[1], 1);
      dup2 (fds[1], 2);
      execv (bin, (char **)argv);
      _exit (127);
    }
  close (fds[1]);
  size_t len = 0;
  ssize_t r;
  while ((r = read (fds[0], out + len, sizeof out - 1 - len)) > 0)
    len += (size_t)r;
  out[len] = '\0';
  close (fds[0]);
  int status;
  cr_assert_eq (waitpid (pid, &status, 0), pid);
  return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

/* <tmp>/NAME into BUF (PATH_MAX). */
static char *
at (char *buf, const char *name)
{
  snprintf (buf, PATH_MAX, "%s/%s", tmp.dir, name);
  return buf;
}

static void
write_text (const char *path, const char *text)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  cr_assert_geq (fd, 0, "open %s: %m", path);
  cr_assert_eq (write (fd, text, strlen (text)), (ssize_t)strlen (text));
  cr_assert_eq (fsync (fd), 0);
  close (fd);
}

static void
assert_text (const char *path, const char *text)
{
  char buf[256] = "";
  int fd = open (path, O_RDONLY);
  cr_assert_geq (fd, 0, "open %s: %m", path);
  ssize_t n = read (fd, buf, sizeof buf - 1);
  close (fd);
  cr_assert_str_eq (n > 0 ? buf : "", text, "%s", path);
}

/* Nothing of the image at IMG is served any more: no mount at MNT, no loop device on
   a file below tmp, no process naming IMG. */
static void
assert_released (const char *img, const char *mnt)
{
  cr_assert_not (pgd_is_mountpoint (mnt), "%s still mounted", mnt);
  char cmd[PATH_MAX + 64];
  snprintf (cmd, sizeof cmd, "losetup -a | grep -q '%s'", tmp.dir);
  cr_assert_neq (system (cmd), 0, "a loop device is still bound below %s", tmp.dir);
  snprintf (cmd, sizeof cmd, "pgrep -f 'serve-imag[e].*%s' >/dev/null", img);
  cr_assert_neq (system (cmd), 0, "an image server of %s still runs", img);
}

Test (cli, create_mount_clone_grow)
{
  char img[PATH_MAX], child[PATH_MAX], mnt[PATH_MAX], run[PATH_MAX], f[PATH_MAX];
  at (img, "img");
  at (child, "child");
  at (mnt, "mnt");
  at (run, "run");
  cr_assert_eq (mkdir (mnt, 0755), 0);

  cr_assert_eq (cli ("create", "--cluster", "64K", img, "512M", NULL), 0, "%s", out);
  cr_assert_eq (cli ("info", img, NULL), 0, "%s", out);
  cr_assert_not_null (strstr (out, "size 536870912\n"), "%s", out);
  cr_assert_not_null (strstr (out, "cluster 65536\n"), "%s", out);
  cr_assert_not_null (strstr (out, "deltas 1\n"), "%s", out);

  cr_assert_eq (cli ("mount", "--run-dir", run, img, mnt, NULL), 0, "%s", out);
  cr_assert (pgd_is_mountpoint (mnt));
  write_text (at (f, "mnt/hello"), "parent\n");
  cr_assert_eq (cli ("mount", "--run-dir", run, img, mnt, NULL), 1, "a second mount: %s", out);
  cr_assert_eq (cli ("umount", "--run-dir", run, img, mnt, NULL), 0, "%s", out);
  assert_released (img, mnt);
  cr_assert_eq (cli ("check", img, NULL), 0, "%s", out);

  /* the clone sees the parent's file; its writes stay its own */
  cr_assert_eq (cli ("clone", img, child, NULL), 0, "%s", out);
  cr_assert_eq (cli ("info", child, NULL), 0, "%s", out);
  cr_assert_not_null (strstr (out, "deltas 2\n"), "%s", out);
  cr_assert_eq (cli ("mount", "--run-dir", run, child, mnt, NULL), 0, "%s", out);
  assert_text (at (f, "mnt/hello"), "parent\n");
  write_text (f, "child\n");
  cr_assert_eq (cli ("umount", "--run-dir", run, child, mnt, NULL), 0, "%s", out);

  cr_assert_eq (cli ("mount", "--ro", "--run-dir", run, img, mnt, NULL), 0, "%s", out);
  assert_text (f, "parent\n");
  cr_assert_lt (open (at (f, "mnt/new"), O_WRONLY | O_CREAT, 0644), 0,
                "a read-only mount took a file");
  cr_assert_eq (cli ("umount", "--run-dir", run, img, mnt, NULL), 0, "%s", out);

  /* grow the clone, and ext4 with it at the next mount */
  cr_assert_eq (cli ("grow", child, "1G", NULL), 0, "%s", out);
  cr_assert_eq (cli ("mount", "--resize", "--run-dir", run, child, mnt, NULL), 0, "%s", out);
  struct statvfs sv;
  cr_assert_eq (statvfs (mnt, &sv), 0);
  cr_assert_gt ((uint64_t)sv.f_blocks * sv.f_frsize, 900ull << 20, "ext4 did not grow");
  assert_text (at (f, "mnt/hello"), "child\n");
  cr_assert_eq (cli ("umount", "--run-dir", run, child, mnt, NULL), 0, "%s", out);
  assert_released (child, mnt);
  cr_assert_eq (cli ("check", child, NULL), 0, "%s", out);
  cr_assert_eq (cli ("check", img, NULL), 0, "%s", out);
}

/* Without --run-dir the runtime state goes to a directory derived from the image path,
   which umount finds again and removes. */
Test (cli, default_run_dir_is_removed)
{
  char img[PATH_MAX], mnt[PATH_MAX];
  at (img, "img");
  at (mnt, "mnt");
  cr_assert_eq (mkdir (mnt, 0755), 0);
  cr_assert_eq (cli ("create", img, "256M", NULL), 0, "%s", out);
  cr_assert_eq (cli ("mount", img, mnt, NULL), 0, "%s", out);
  cr_assert_eq (cli ("umount", img, mnt, NULL), 0, "%s", out);
  assert_released (img, mnt);
  /* relative paths work as well (the engine compares absolute ones with mountinfo) */
  char cwd[PATH_MAX];
  cr_assert_not_null (getcwd (cwd, sizeof cwd));
  cr_assert_eq (chdir (tmp.dir), 0);
  int rm_ = cli ("mount", "img", "mnt", NULL);
  int rm2 = rm_ == 0 ? cli ("mount", "img", "mnt", NULL) : -2;
  int ru = cli ("umount", "img", "mnt", NULL);
  cr_assert_eq (chdir (cwd), 0);
  cr_assert_eq (rm_, 0, "relative mount");
  cr_assert_eq (rm2, 1, "a second relative mount was not refused");
  cr_assert_eq (ru, 0, "relative umount: %s", out);
  assert_released (img, mnt);
  cr_assert_eq (cli ("umount", img, mnt, NULL), 0, "umount of an unmounted image: %s", out);
  /* the directory the engine used for this image is gone again */
  char cmd[PATH_MAX + 128];
  snprintf (cmd, sizeof cmd, "grep -rqs '%s' /run/ploop-graphdriver/by-hand", img);
  cr_assert_neq (system (cmd), 0, "a run directory naming %s is left", img);
}

Test (cli, bad_input_changes_nothing)
{
  char img[PATH_MAX], mnt[PATH_MAX], f[PATH_MAX];
  at (img, "img");
  at (mnt, "mnt");
  cr_assert_eq (mkdir (mnt, 0755), 0);

  cr_assert_eq (cli ("create", img, "ten", NULL), 1);
  cr_assert_not_null (strstr (out, "ten"), "the message names the bad size: %s", out);
  cr_assert_eq (cli ("create", "--cluster", "3000", img, "1G", NULL), 1);
  cr_assert_not_null (strstr (out, "cluster"), "%s", out);
  cr_assert_eq (cli ("create", img, NULL), 2, "missing argument: %s", out);
  cr_assert_eq (cli ("frobnicate", img, NULL), 2, "unknown command: %s", out);

  cr_assert_eq (cli ("create", img, "256M", "--no-mkfs", NULL), 0, "%s", out);
  struct stat before, after;
  cr_assert_eq (stat (at (f, "img/root.hdd"), &before), 0);
  cr_assert_eq (cli ("create", img, "256M", NULL), 1, "create over an image: %s", out);
  cr_assert_not_null (strstr (out, "not empty"), "%s", out);
  cr_assert_eq (stat (f, &after), 0);
  cr_assert_eq (before.st_ino, after.st_ino, "the image was replaced");
  cr_assert_eq (before.st_size, after.st_size, "the image changed");

  cr_assert_eq (cli ("mount", at (f, "nothing"), mnt, NULL), 1);
  cr_assert_not_null (strstr (out, "nothing"), "the message names the image: %s", out);
  cr_assert_eq (cli ("clone", at (f, "nothing"), at (f, "c"), NULL), 1, "%s", out);
  cr_assert_eq (cli ("grow", img, "128M", NULL), 1, "grow never shrinks: %s", out);
  cr_assert_not_null (strstr (out, "smaller"), "%s", out);
  cr_assert_eq (cli ("info", img, NULL), 0, "%s", out);
  cr_assert_not_null (strstr (out, "size 268435456\n"), "%s", out);
  assert_released (img, mnt);
}
