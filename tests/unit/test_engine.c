/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The user engine through the whole stack: image server -> FUSE file -> loop -> ext4.
   The server binary is $PGD_BUILD/ploop-graphdriver when it exists, else this test
   binary, whose main() dispatches "serve-image" like the real one. Every test leaves
   no mount, loop device or process behind, even when it fails (fini). */
#include "ploop_fixture.h"

#include <signal.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include "engine/chain.h"
#include "engine/delta.h"
#include "engine/engine.h"
#include "engine/image.h"
#include "engine/imgsrv.h"
#include "engine/loop.h"
#include "util.h"

static char root[PATH_MAX], img[PATH_MAX], run[PATH_MAX], mnt[PATH_MAX];
static struct pgd_engine eng;

static void
engine_for_tests (struct pgd_engine *e)
{
  char exe[PATH_MAX];
  const char *build = getenv ("PGD_BUILD");
  struct pgd_err err = { 0 };

  snprintf (exe, sizeof exe, "%s/ploop-graphdriver", build ? build : "build");
  if (access (exe, X_OK) != 0 && realpath ("/proc/self/exe", exe) == NULL)
    cr_assert_fail ("no binary to serve images");
  cr_assert_eq (pgd_engine_setup (e, "user", exe, &err), 0, "%s", err.msg);
  /* to show what the buffered server does under the same tests */
  if (getenv ("PGD_TEST_DELTA_BUFFERED"))
    e->delta_dio = false;
}

/* Remove every trace of ROOT: mounts, loop devices, processes, files. */
static void
cleanup_root (void)
{
  if (root[0] == '\0')
    return;
  /* a server stuck in the kernel would keep everything busy: abort its FUSE connection */
  fx_sh ("grep -F ' %s' /proc/self/mountinfo | awk '$9 ~ /^fuse/ {print $3}' | "
         "while IFS=: read maj min; do echo 1 > /sys/fs/fuse/connections/$min/abort; done "
         "2>/dev/null; true",
         root);
  for (int pass = 0; pass < 2; pass++)
    {
      fx_sh ("grep -F ' %s' /proc/self/mountinfo | awk '{print $5}' | sort -r | "
             "xargs -r -n1 umount -l 2>/dev/null",
             root);
      fx_sh ("for f in /sys/block/loop*/loop/backing_file; do "
             "case \"$(cat $f 2>/dev/null)\" in '%s'*) "
             "losetup -d /dev/$(basename $(dirname $(dirname $f))) 2>/dev/null;; esac; done",
             root);
    }
  fx_sh ("for p in /proc/[0-9]*; do [ \"${p#/proc/}\" = \"$$\" ] && continue; "
         "{ tr '\\0' ' ' < $p/cmdline; } 2>/dev/null | grep -qF -- '%s/' && kill -9 ${p#/proc/}; "
         "done; true",
         root);
  /* a memory cgroup a test made (its processes are gone by now) */
  fx_sh ("[ -f '%s/memcg' ] && rmdir \"$(cat '%s/memcg')\" 2>/dev/null; true", root, root);
  if (getenv ("PGD_TEST_KEEP") == NULL)
    fx_sh ("rm -rf '%s'", root);
}

static void
setup (void)
{
  fx_tmpdir (root, sizeof root, "engine");
  snprintf (img, sizeof img, "%s/img", root);
  snprintf (run, sizeof run, "%s/run", root);
  snprintf (mnt, sizeof mnt, "%s/mnt", root);
  cr_assert_eq (mkdir (img, 0700), 0);
  cr_assert_eq (mkdir (mnt, 0755), 0);
  engine_for_tests (&eng);
}

static void
teardown (void)
{
  cleanup_root ();
}

TestSuite (engine, .init = setup, .fini = teardown);

static void
do_mount (const char *image, const char *runp, const char *target, unsigned flags)
{
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_engine_mount (&eng, image, runp, target, flags, NULL, &err), 0, "%s", err.msg);
}

static void
do_umount (const char *image, const char *runp, const char *target)
{
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_engine_umount (&eng, image, runp, target, &err), 0, "%s", err.msg);
}

static long
server_pid (const char *runp)
{
  char path[PATH_MAX], line[64];
  long pid = 0;

  snprintf (path, sizeof path, "%s/server.pid", runp);
  FILE *f = fopen (path, "r");
  if (f == NULL)
    return 0;
  if (fgets (line, sizeof line, f))
    pid = atol (line);
  fclose (f);
  return pid;
}

static bool
process_gone (long pid)
{
  char path[64], state = 0;
  FILE *f;

  snprintf (path, sizeof path, "/proc/%ld/stat", pid);
  f = fopen (path, "r");
  if (f == NULL)
    return true;
  if (fscanf (f, "%*d (%*[^)]) %c", &state) != 1)
    state = 'Z';
  fclose (f);
  return state == 'Z' || state == 'X';
}

/* Image servers (serve-image processes) working under ROOT. */
static int
servers_running (void)
{
  DIR *d = opendir ("/proc");
  struct dirent *de;
  int n = 0;

  cr_assert_not_null (d);
  while ((de = readdir (d)) != NULL)
    {
      char path[300], cmd[4096];
      long pid = atol (de->d_name);
      if (pid <= 0 || process_gone (pid))
        continue;
      snprintf (path, sizeof path, "/proc/%ld/cmdline", pid);
      FILE *f = fopen (path, "r");
      if (f == NULL)
        continue;
      size_t len = fread (cmd, 1, sizeof cmd - 1, f);
      fclose (f);
      for (size_t i = 0; i < len; i++)
        if (cmd[i] == '\0')
          cmd[i] = ' ';
      cmd[len] = '\0';
      if (strstr (cmd, "serve-image") && strstr (cmd, root))
        n++;
    }
  closedir (d);
  return n;
}

/* Nothing of the engine is left for the image served through RUNP. */
static void
expect_nothing_left (const char *runp, const char *target, long pid)
{
  char fuse[PATH_MAX], disk[PATH_MAX], real[PATH_MAX];
  int nr;

  cr_expect (!pgd_is_mountpoint (target), "%s still mounted", target);
  if (realpath (runp, real) == NULL)
    snprintf (real, sizeof real, "%s", runp);
  snprintf (fuse, sizeof fuse, "%s/fuse", real);
  snprintf (disk, sizeof disk, "%s/disk", fuse);
  cr_expect (!pgd_is_mountpoint (fuse), "FUSE still mounted at %s", fuse);
  cr_expect (!pgd_loop_find (disk, &nr), "/dev/loop%d still backed by %s", nr, disk);
  cr_expect_eq (fx_sh ("cat /sys/block/loop*/loop/backing_file 2>/dev/null | grep -qF '%s'", root),
                1, "a loop device still points into %s", root);
  if (pid > 0)
    cr_expect (process_gone (pid), "server %ld still runs", pid);
  cr_expect_eq (servers_running (), 0, "an image server still runs");
}

static void
drop_caches (void)
{
  sync ();
  cr_assert_eq (fx_sh ("echo 3 > /proc/sys/vm/drop_caches"), 0);
}

/* sha256 of every regular file under DIR, sorted, in one string. */
static void
tree_sums (const char *dir, char *out, size_t len)
{
  cr_assert_eq (fx_sh_out (out, len,
                           "cd '%s' && find . -type f ! -path './lost+found/*' -print0 | "
                           "sort -z | xargs -0 -r sha256sum | sha256sum | cut -c1-64",
                           dir),
                0);
}

static void
write_files (const char *dir, int n, const char *tag)
{
  cr_assert_eq (fx_sh ("cd '%s' && for i in $(seq 1 %d); do "
                       "head -c $((i * 37 * 1024 + 11)) /dev/urandom > %s-$i; done && "
                       "mkdir -p d/e && head -c 3000000 /dev/urandom > d/e/%s-big && sync",
                       dir, n, tag, tag),
                0);
}

Test (engine, setup_picks_user_without_module)
{
  struct pgd_engine e;
  struct pgd_err err = { 0 };

  cr_assert_eq (pgd_engine_setup (&e, "auto", NULL, &err), 0, "%s", err.msg);
  cr_expect_eq (e.kind, PGD_ENGINE_USER);
  cr_expect_str_eq (e.exe, "/proc/self/exe");
  cr_expect_eq (pgd_engine_setup (&e, "kernel", NULL, &err), -1);
  cr_expect_eq (err.errnum, ENODEV);
  cr_expect_eq (pgd_engine_setup (&e, "zfs", NULL, &err), -1);
  cr_expect_eq (err.errnum, EINVAL);
}

static void
ext4_roundtrip (unsigned cluster_sectors, bool loop_dio)
{
  char before[80], after[80];
  long pid;

  eng.loop_dio = loop_dio;
  eng.delta_dio = loop_dio;
  fx_create_image (img, 1ULL << 30, cluster_sectors);
  do_mount (img, run, mnt, PGD_MOUNT_MKFS);
  pid = server_pid (run);
  cr_expect_gt (pid, 0);
  write_files (mnt, 20, "f");
  tree_sums (mnt, before, sizeof before);
  do_umount (img, run, mnt);
  expect_nothing_left (run, mnt, pid);
  drop_caches ();
  fx_check_deltas (img);

  do_mount (img, run, mnt, 0);
  tree_sums (mnt, after, sizeof after);
  cr_expect_str_eq (after, before, "files changed across umount/remount");
  cr_expect_eq (fx_sh ("cd '%s' && rm f-3 && head -c 100000 /dev/urandom >> f-4 && sync", mnt), 0);
  tree_sums (mnt, before, sizeof before);
  pid = server_pid (run);
  do_umount (img, run, mnt);
  expect_nothing_left (run, mnt, pid);
  drop_caches ();
  do_mount (img, run, mnt, PGD_MOUNT_RO);
  tree_sums (mnt, after, sizeof after);
  cr_expect_str_eq (after, before);
  do_umount (img, run, mnt);
  fx_check_deltas (img);
}

/* The default stack uses direct I/O in the loop device and in the server: bytes are
   verified, not only exit codes (PLOOP.md §6.3a). The buffered variant goes through the
   page cache at both places. */
Test (engine, ext4_roundtrip_1m) { ext4_roundtrip (2048, true); }

Test (engine, ext4_roundtrip_32k) { ext4_roundtrip (64, true); }

Test (engine, ext4_roundtrip_64k_buffered) { ext4_roundtrip (128, false); }

Test (engine, readonly_mount_refuses_writes)
{
  char path[PATH_MAX];
  int fd;

  fx_create_image (img, 1ULL << 30, 2048);
  do_mount (img, run, mnt, PGD_MOUNT_MKFS);
  write_files (mnt, 3, "r");
  do_umount (img, run, mnt);
  do_mount (img, run, mnt, PGD_MOUNT_RO);
  snprintf (path, sizeof path, "%s/new", mnt);
  fd = open (path, O_CREAT | O_WRONLY, 0600);
  cr_expect_lt (fd, 0);
  cr_expect_eq (errno, EROFS);
  /* the exported file is read-only too */
  snprintf (path, sizeof path, "%s/fuse/disk", run);
  fd = open (path, O_RDWR);
  cr_expect_lt (fd, 0);
  do_umount (img, run, mnt);
  expect_nothing_left (run, mnt, 0);
}

Test (engine, mount_failure_undoes_everything)
{
  struct pgd_err err = { 0 };
  char missing[PATH_MAX];

  fx_create_image (img, 1ULL << 30, 2048);
  snprintf (missing, sizeof missing, "%s/no-such-dir", root);
  cr_expect_eq (pgd_engine_mount (&eng, img, run, missing, PGD_MOUNT_MKFS, NULL, &err), -1);
  cr_expect_not_null (strstr (err.msg, "no-such-dir"), "%s", err.msg);
  expect_nothing_left (run, missing, 0);
  cr_expect_eq (servers_running (), 0, "a server still runs");
  /* the image was closed cleanly and can be mounted now */
  do_mount (img, run, mnt, PGD_MOUNT_MKFS);
  /* a second mount of the same image is refused while it is served */
  char run2[PATH_MAX], mnt2[PATH_MAX];
  snprintf (run2, sizeof run2, "%s/run2", root);
  snprintf (mnt2, sizeof mnt2, "%s/mnt2", root);
  cr_assert_eq (mkdir (mnt2, 0755), 0);
  cr_expect_eq (pgd_engine_mount (&eng, img, run2, mnt2, 0, NULL, &err), -1);
  cr_expect_not_null (strstr (err.msg, "locked"), "%s", err.msg);
  cr_expect_eq (pgd_engine_mount (&eng, img, run, mnt, 0, NULL, &err), -1);
  cr_expect_eq (err.errnum, EBUSY);
  do_umount (img, run, mnt);
  do_umount (img, run, mnt); /* nothing mounted: success */
  expect_nothing_left (run, mnt, 0);
}

/* The parent's files stay byte-identical while a clone is written (PLOOP.md §8.4). */
Test (engine, clone_keeps_parent_identical)
{
  char child[PATH_MAX], crun[PATH_MAX], cmnt[PATH_MAX];
  char parent_sums[80], parent_after[80], delta_before[80], delta_after[80], child_sums[80];

  fx_create_image (img, 1ULL << 30, 2048);
  do_mount (img, run, mnt, PGD_MOUNT_MKFS);
  write_files (mnt, 10, "p");
  tree_sums (mnt, parent_sums, sizeof parent_sums);
  do_umount (img, run, mnt);
  snprintf (child, sizeof child, "%s/child", root);
  snprintf (crun, sizeof crun, "%s/crun", root);
  snprintf (cmnt, sizeof cmnt, "%s/cmnt", root);
  cr_assert_eq (mkdir (child, 0700), 0);
  cr_assert_eq (mkdir (cmnt, 0755), 0);
  fx_clone (img, child);
  cr_assert_eq (fx_sh_out (delta_before, sizeof delta_before,
                           "cat '%s'/root.hdd* | sha256sum | cut -c1-64", img),
                0);

  /* the parent is shared now: read-only while the child is written */
  do_mount (img, run, mnt, PGD_MOUNT_RO);
  do_mount (child, crun, cmnt, 0);
  cr_expect_eq (fx_sh ("cd '%s' && rm p-2 && head -c 5000 /dev/urandom | "
                       "dd of=p-5 bs=1 seek=1000 conv=notrunc 2>/dev/null && "
                       "head -c 2000000 /dev/urandom > new && sync",
                       cmnt),
                0);
  tree_sums (cmnt, child_sums, sizeof child_sums);
  cr_expect_str_neq (child_sums, parent_sums);
  tree_sums (mnt, parent_after, sizeof parent_after);
  cr_expect_str_eq (parent_after, parent_sums);
  do_umount (child, crun, cmnt);
  do_umount (img, run, mnt);
  cr_assert_eq (fx_sh_out (delta_after, sizeof delta_after,
                           "cat '%s'/root.hdd* | sha256sum | cut -c1-64", img),
                0);
  cr_expect_str_eq (delta_after, delta_before, "the parent's deltas changed");
  fx_check_deltas (child);
  drop_caches ();
  do_mount (child, crun, cmnt, PGD_MOUNT_RO);
  tree_sums (cmnt, parent_after, sizeof parent_after);
  cr_expect_str_eq (parent_after, child_sums);
  do_umount (child, crun, cmnt);
}

/* The exported disk equals a merged copy of the chain converted by qemu-img (§8.3). */
Test (engine, disk_matches_merged_chain)
{
  char got[80], want[80], disk[PATH_MAX];

  fx_create_image (img, 256ULL << 20, 64);
  do_mount (img, run, mnt, PGD_MOUNT_MKFS);
  write_files (mnt, 5, "a");
  do_umount (img, run, mnt);
  fx_snapshot (img);
  do_mount (img, run, mnt, 0);
  write_files (mnt, 5, "b");
  cr_assert_eq (fx_sh ("rm '%s'/a-1", mnt), 0);
  do_umount (img, run, mnt);
  fx_snapshot (img);
  do_mount (img, run, mnt, 0);
  write_files (mnt, 5, "c");
  /* read the disk through the FUSE export while mounted (after a sync) */
  sync ();
  do_umount (img, run, mnt);
  do_mount (img, run, mnt, PGD_MOUNT_RO);
  snprintf (disk, sizeof disk, "%s/fuse/disk", run);
  cr_assert_eq (fx_sh_out (got, sizeof got, "sha256sum '%s' | cut -c1-64", disk), 0);
  do_umount (img, run, mnt);
  fx_merged_sha256 (img, want, sizeof want);
  cr_expect_str_eq (got, want);
  fx_check_deltas (img);
}

/* The server outlives the process that mounted (a plugin crash or restart); another
   process adopts and unmounts it. */
Test (engine, server_survives_the_mounting_process)
{
  char before[80], after[80];
  int status;
  long pid;

  fx_create_image (img, 1ULL << 30, 128);
  pid_t child = fork ();
  cr_assert_geq (child, 0);
  if (child == 0)
    {
      struct pgd_err err = { 0 };
      int rc = pgd_engine_mount (&eng, img, run, mnt, PGD_MOUNT_MKFS, NULL, &err);
      /* the "plugin" dies hard right after the mount */
      if (rc == 0)
        kill (getpid (), SIGKILL);
      _exit (1);
    }
  cr_assert_eq (waitpid (child, &status, 0), child);
  cr_assert (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL, "mount failed in child");
  pid = server_pid (run);
  cr_assert_gt (pid, 0);
  cr_expect (!process_gone (pid));
  cr_expect (pgd_engine_is_mounted (&eng, img, run, mnt));
  write_files (mnt, 5, "s");
  tree_sums (mnt, before, sizeof before);
  do_umount (img, run, mnt);
  expect_nothing_left (run, mnt, pid);
  cr_expect (!pgd_engine_is_mounted (&eng, img, run, mnt));
  do_mount (img, run, mnt, PGD_MOUNT_RO);
  tree_sums (mnt, after, sizeof after);
  cr_expect_str_eq (after, before);
  do_umount (img, run, mnt);
}

/* After an offline grow of the image, PGD_MOUNT_RESIZE gives ext4 the new size. */
Test (engine, grow_then_resize_on_mount)
{
  char before[80], after[80];
  struct pgd_err err = { 0 };
  struct statvfs sv;

  fx_create_image (img, 1ULL << 30, 2048);
  do_mount (img, run, mnt, PGD_MOUNT_MKFS);
  write_files (mnt, 4, "g");
  tree_sums (mnt, before, sizeof before);
  do_umount (img, run, mnt);
  cr_assert_eq (pgd_image_grow (img, 3ULL << 30, &err), 0, "%s", err.msg);
  do_mount (img, run, mnt, PGD_MOUNT_RESIZE);
  cr_assert_eq (statvfs (mnt, &sv), 0);
  cr_expect_gt ((uint64_t)sv.f_blocks * sv.f_frsize, 2900ULL << 20, "ext4 was not grown");
  tree_sums (mnt, after, sizeof after);
  cr_expect_str_eq (after, before);
  do_umount (img, run, mnt);
  fx_check_deltas (img);
}

Test (engine, seek_data_hole_on_export)
{
  char disk[PATH_MAX];
  int fd;
  off_t d, h;

  fx_create_image (img, 1ULL << 30, 2048);
  do_mount (img, run, mnt, PGD_MOUNT_MKFS);
  snprintf (disk, sizeof disk, "%s/fuse/disk", run);
  fd = open (disk, O_RDONLY);
  cr_assert_geq (fd, 0);
  d = lseek (fd, 0, SEEK_DATA);
  cr_expect_eq (d, 0, "ext4's first block is data");
  h = lseek (fd, 0, SEEK_HOLE);
  cr_expect_gt (h, 0);
  cr_expect_lt (h, 1LL << 30, "a fresh ext4 leaves holes");
  cr_expect_eq (lseek (fd, 0, SEEK_END), 1LL << 30);
  close (fd);
  do_umount (img, run, mnt);
}

/* Whether every process of process group PGID has exited (zombies count as gone). The
   leader counts before it has made the group (setsid right after the fork). */
static bool
group_gone (pid_t pgid)
{
  DIR *d = opendir ("/proc");
  struct dirent *de;
  bool gone = true;

  cr_assert_not_null (d);
  while (gone && (de = readdir (d)) != NULL)
    {
      char path[300], state = 0;
      long pid = atol (de->d_name), pgrp = 0;
      if (pid <= 0)
        continue;
      snprintf (path, sizeof path, "/proc/%ld/stat", pid);
      FILE *f = fopen (path, "r");
      if (f == NULL)
        continue;
      if (fscanf (f, "%*d (%*[^)]) %c %*d %ld", &state, &pgrp) == 2 && (pgrp == pgid || pid == pgid)
          && state != 'Z' && state != 'X')
        gone = false;
      fclose (f);
    }
  closedir (d);
  return gone;
}

/* Run the shell script SCRIPT in the background in a process group of its own; return
   its id. The script lives under ROOT, so the fini sweep kills it if a test fails. */
static pid_t
start_group (const char *name, const char *script)
{
  char path[PATH_MAX], out[32];
  FILE *f;

  snprintf (path, sizeof path, "%s/%s.sh", root, name);
  f = fopen (path, "w");
  cr_assert_not_null (f);
  fputs (script, f);
  cr_assert_eq (fclose (f), 0);
  cr_assert_eq (
      fx_sh_out (out, sizeof out, "setsid sh '%s' </dev/null >'%s.log' 2>&1 & echo $!", path, path),
      0);
  cr_assert_gt (atol (out), 0);
  return (pid_t)atol (out);
}

/* kill -9 the server PID of the image mounted at MNT, then the writers in process group
   WRITERS: the engine's umount reports the death and leaves nothing behind, and the top
   stays marked in use for the next mount to repair. */
static void
crash_server (long pid, pid_t writers)
{
  struct pgd_err err = { 0 };
  bool in_use = false;
  char dd[PATH_MAX];

  cr_assert_eq (kill ((pid_t)pid, SIGKILL), 0);
  while (!process_gone (pid))
    usleep (10000);
  /* they fail with ENOTCONN or EIO now that the FUSE connection is gone */
  kill (-writers, SIGKILL);
  kill (writers, SIGKILL);
  while (!group_gone (writers))
    usleep (10000);
  cr_expect_eq (pgd_engine_umount (&eng, img, run, mnt, &err), -1);
  cr_expect_not_null (strstr (err.msg, "died"), "%s", err.msg);
  expect_nothing_left (run, mnt, pid);
  snprintf (dd, sizeof dd, "%s/" FX_DD, img);
  cr_assert_eq (pgd_chain_top_in_use (dd, &in_use, &err), 0, "%s", err.msg);
  cr_expect (in_use, "the top of a killed server is not marked in use");
}

/* libploop's own repair check of image IMG passes once its thin deltas are written out
   (check_dd calls a BAT hole in a lower delta sparse: README, thin deltas). */
static void
expect_libploop_check_dd (const char *img)
{
  struct pgd_err err = { 0 };
  uint64_t filled;

  cr_expect_eq (pgd_image_allocate (img, &filled, &err), 0, "allocate %s: %s", img, err.msg);
  cr_expect_eq (fx_sh ("cd '%s' && " FX_PLOOP_ENV "ploop check " FX_DD " >/dev/null 2>&1", img), 0);
}

/* kill -9 of the server while writing: the next mount repairs the image and every
   file that was fsync'ed before is intact (PLOOP.md §8.4). */
Test (engine, kill_server_during_write_then_repair)
{
  char before[80], after[80], script[PATH_MAX + 100];
  long pid;
  pid_t writer;

  fx_create_image (img, 2ULL << 30, 2048);
  do_mount (img, run, mnt, PGD_MOUNT_MKFS);
  write_files (mnt, 8, "safe");
  tree_sums (mnt, before, sizeof before);
  pid = server_pid (run);
  cr_assert_gt (pid, 0);
  /* kill while the write is under way: once 100 MB of it have reached the file */
  snprintf (script, sizeof script,
            "mkdir '%s/big' && dd if=/dev/zero of='%s/big/zero' bs=1M count=1500\n", mnt, mnt);
  writer = start_group ("dd", script);
  while (fx_sh ("[ $(stat -c %%s '%s/big/zero' 2>/dev/null || echo 0) -ge 100000000 ]", mnt) != 0)
    {
      cr_assert (!group_gone (writer), "the writer ended before the kill");
      usleep (10000);
    }
  crash_server (pid, writer);
  do_mount (img, run, mnt, 0);
  cr_expect_eq (fx_sh ("rm -rf '%s/big'", mnt), 0);
  tree_sums (mnt, after, sizeof after);
  cr_expect_str_eq (after, before, "fsync'ed files changed after the crash");
  do_umount (img, run, mnt);
  fx_check_deltas (img);
  expect_libploop_check_dd (img);
}

#define KILL_ROUNDS 10

/* Lines in file PATH (0 when it does not exist). */
static unsigned
lines_in (const char *path)
{
  FILE *f = fopen (path, "r");
  unsigned n = 0;
  int ch;

  if (f == NULL)
    return 0;
  while ((ch = fgetc (f)) != EOF)
    n += ch == '\n';
  fclose (f);
  return n;
}

/* kill -9 of the server at random points of writes and fsyncs through ext4, round after
   round: each time the next mount repairs the image, libploop's check accepts every
   delta, and every file whose fsync returned reads back with its checksum. A round's
   writer appends "sha256  name" to a manifest outside the image only once the file's
   fsync has succeeded, while an unsynced dd keeps other writes in flight; the kill
   comes after a random number of such files or MB of the dd, plus up to 0.2 s. The
   repairing mount is read-only (noload: no journal replay), so that the deltas are
   checked before anything writes to them; the checksums are read on the read-write
   mount that follows (journal replayed), which also carries the next round. Every
   other round adds a snapshot, so later rounds copy on write through more levels.
   PGD_TEST_SEED replays a seed. */
Test (engine, kill_server_in_a_loop_then_repair)
{
  const char *env = getenv ("PGD_TEST_SEED");
  unsigned seed = env ? (unsigned)atol (env) : (unsigned)getpid (), verified = 0;
  char script[4 * PATH_MAX], man[PATH_MAX], dd[PATH_MAX];
  struct pgd_err err = { 0 };
  bool in_use;

  srand (seed);
  snprintf (dd, sizeof dd, "%s/" FX_DD, img);
  fx_create_image (img, 2ULL << 30, 256);
  do_mount (img, run, mnt, PGD_MOUNT_MKFS);
  for (int r = 0; r < KILL_ROUNDS; r++)
    {
      long pid = server_pid (run);
      unsigned want_files = 1 + rand () % 6, want_mb = 8 + rand () % 120;
      bool by_size = rand () % 3 == 0;
      pid_t writers;

      cr_assert_gt (pid, 0);
      cr_assert_eq (fx_sh ("rm -f '%s'/big-*", mnt), 0); /* unsynced: whatever is left */
      snprintf (man, sizeof man, "%s/man-%d", root, r);
      snprintf (script, sizeof script,
                "cd '%s' || exit 1\n"
                "dd if=/dev/urandom of='%s/big-%d' bs=1M count=400 2>/dev/null &\n"
                "i=0\n"
                "while :; do\n"
                "  i=$((i + 1)); f=w%d-$i\n"
                "  head -c $(($(shuf -i 1-2048 -n 1) * 1024 + $(shuf -i 0-4095 -n 1))) "
                "/dev/urandom > $f || exit 1\n"
                "  sync $f || exit 1\n"
                "  sha256sum $f >> '%s' || exit 1\n"
                "done\n",
                mnt, mnt, r, r, man);
      writers = start_group ("writers", script);
      /* the random point: after some fsync'ed files, or some MB of the unsynced dd */
      for (;;)
        {
          char big[PATH_MAX + 16];
          struct stat st;
          snprintf (big, sizeof big, "%s/big-%d", mnt, r);
          if (by_size ? stat (big, &st) == 0 && st.st_size >= (off_t)want_mb << 20
                      : lines_in (man) >= want_files)
            break;
          if (group_gone (writers))
            {
              fx_sh ("cat '%s'/writers.sh.log >&2", root);
              cr_assert_fail ("seed %u round %d: the writers ended early", seed, r);
            }
          usleep (5000);
        }
      usleep ((useconds_t)(rand () % 200000));
      crash_server (pid, writers);

      /* the next mount repairs; nothing has written to the image since */
      do_mount (img, run, mnt, PGD_MOUNT_RO);
      cr_assert_eq (pgd_chain_top_in_use (dd, &in_use, &err), 0, "%s", err.msg);
      cr_expect (!in_use, "seed %u round %d: the mount did not repair the top", seed, r);
      fx_check_deltas (img);
      do_umount (img, run, mnt);
      if (r % 2 == 1)
        fx_snapshot (img);
      do_mount (img, run, mnt, 0);
      verified = 0;
      for (int k = 0; k <= r; k++)
        {
          snprintf (man, sizeof man, "%s/man-%d", root, k);
          verified += lines_in (man);
        }
      cr_expect_eq (
          fx_sh ("cd '%s' && cat '%s'/man-* | sha256sum --quiet --strict -c -", mnt, root), 0,
          "seed %u round %d: an fsync'ed file changed", seed, r);
    }
  cr_log_info ("seed %u: %d kills, %u fsync'ed files verified", seed, KILL_ROUNDS, verified);
  do_umount (img, run, mnt);
  expect_nothing_left (run, mnt, 0);
  fx_check_deltas (img);
  expect_libploop_check_dd (img);
}

/* A memory cgroup limited to LIMIT bytes, or false when there is none we may write:
   cgroup v2 (a child of the unified root, memory.max) or v1 (below our own memory
   cgroup, memory.limit_in_bytes). */
static bool
make_memcg (char *cg, size_t len, unsigned long long limit)
{
  char self[PATH_MAX] = "", line[PATH_MAX];
  FILE *f;

  if (fx_sh ("grep -qw memory /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null") == 0)
    {
      snprintf (cg, len, "/sys/fs/cgroup/pgd-test.%d", (int)getpid ());
      if (mkdir (cg, 0755) < 0)
        return false;
      if (fx_sh ("echo %llu > '%s/memory.max'", limit, cg) == 0)
        return true;
      rmdir (cg);
      return false;
    }
  f = fopen ("/proc/self/cgroup", "r");
  if (f == NULL)
    return false;
  while (fgets (line, sizeof line, f))
    if (sscanf (line, "%*d:memory:%4095s", self) == 1)
      break;
  fclose (f);
  if (self[0] == '\0')
    return false;
  snprintf (cg, len, "/sys/fs/cgroup/memory%s/pgd-test.%d", strcmp (self, "/") ? self : "",
            (int)getpid ());
  if (mkdir (cg, 0755) < 0)
    return false;
  return fx_sh ("echo %llu > '%s/memory.limit_in_bytes'", limit, cg) == 0;
}

/* PLOOP.md §6.4: the server shares a small memory cgroup with a large fsync'ed writer,
   an fsync-heavy writer and a page-cache hog. Before the server used O_DIRECT this hung
   for good (reclaim in the server waited on writeback that needed the server). */
Test (engine, memory_pressure_in_small_memcg)
{
  char cg[PATH_MAX];
  long pid;

#ifdef __SANITIZE_ADDRESS__
  /* ASan's allocator keeps freed memory in a quarantine (256 MiB by default) and gives
     out fresh pages instead: an instrumented server cannot live in a 64 MiB memcg, and
     its page faults there wait on writeback only it can finish. The plain build runs
     this test in the first stage of make test. */
  teardown (); /* Criterion runs no .fini after a skip */
  cr_skip_test ("memory pressure is measured on the build without ASan");
#endif
  if (!make_memcg (cg, sizeof cg, 64ULL << 20))
    {
      teardown ();
      cr_skip_test ("no writable memory cgroup (v2 with memory in the root's subtree_control, "
                    "or v1)");
    }
  fx_sh ("echo '%s' > '%s/memcg'", cg, root); /* for the fini sweep */
  fx_create_image (img, 8ULL << 30, 2048);
  do_mount (img, run, mnt, PGD_MOUNT_MKFS);
  pid = server_pid (run);
  cr_assert_eq (
      fx_sh ("head -c 1G /dev/zero > '%s/hog' && echo 3 > /proc/sys/vm/drop_caches", root), 0);
  cr_assert_eq (fx_sh ("echo %ld > '%s/cgroup.procs'", pid, cg), 0);
  cr_expect_eq (fx_sh ("sh -c 'echo $$ > %s/cgroup.procs; "
                       "dd if=/dev/zero of=%s/big bs=1M count=1536 conv=fsync 2>/dev/null & "
                       "for i in $(seq 1 500); do head -c 4096 /dev/zero > %s/s$((i %% 20)); "
                       "sync %s/s$((i %% 20)); done & "
                       "cat %s/hog %s/hog > /dev/null & wait'",
                       cg, mnt, mnt, mnt, root, root),
                0);
  cr_expect_eq (fx_sh ("[ $(stat -c %%s '%s/big') -eq $((1536 << 20)) ]", mnt), 0);
  /* back to where it came from, so that the cgroup can go */
  fx_sh ("echo %ld > '%s/../cgroup.procs'", pid, cg);
  do_umount (img, run, mnt);
  expect_nothing_left (run, mnt, pid);
  rmdir (cg);
  fx_check_deltas (img);
}

int
main (int argc, char *argv[])
{
  if (argc > 1 && strcmp (argv[1], "serve-image") == 0)
    return pgd_imgsrv_main (argc - 1, argv + 1);
  struct criterion_test_set *tests = criterion_initialize ();
  int result = 0;
  if (criterion_handle_args (argc, argv, true))
    result = !criterion_run_all_tests (tests);
  criterion_finalize (tests);
  return result;
}
