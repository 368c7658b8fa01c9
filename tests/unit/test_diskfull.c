/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A full host disk (issue #17), through the store in process on the real engine: Home
   is a small loop-mounted ext4 that a layer's writes fill up. The Put that cannot
   flush says so (not "closed cleanly") and marks the image; once space is free, the
   next Get checks the filesystem (e2fsck) before handing it out, and what was fsync'ed
   before the disk filled is intact. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/layers.h"
#include "store_fixture.h"
#include "util.h"

#define HOST_MIB 160  /* the host filesystem holding Home */
#define FILLER_MIB 24 /* freed once the disk is full */
#define CHUNK_MIB 4

static struct pgd_layers *L;
static const struct pgd_ops *ops = &pgd_layers_ops;
static struct tl_store S;
static bool home_mounted;

static void
setup (void)
{
  tl_store_prepare (&S, "full");
  char cmd[PATH_MAX * 4];
  snprintf (cmd, sizeof cmd,
            "truncate -s %dM %s/host.img && mkfs.ext4 -q -F -m 0 %s/host.img && mkdir %s && "
            "mount -o loop %s/host.img %s",
            HOST_MIB, S.tmp, S.tmp, S.home, S.tmp, S.home);
  cr_assert_eq (system (cmd), 0, "%s", cmd);
  home_mounted = true;
  struct pgd_layers_config cfg = { .state_file = S.state, .engine = "user", .exe = S.exe };
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_layers_open (&L, &cfg, &err), 0, "open: %s", err.msg);
  char *opts[] = { (char *)"ploop.size=512M" };
  struct pgd_init_req req = { .home = S.home, .opts = opts, .nopts = 1 };
  cr_assert_eq (ops->init (L, &req, &err), 0, "init: %s", err.msg);
}

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
            S.home);
  if (system (cmd) != 0)
    fprintf (stderr, "cleanup of mounts failed\n");
  if (home_mounted && umount (S.home) < 0)
    fprintf (stderr, "umount %s: %s\n", S.home, strerror (errno));
  home_mounted = false;
  if (pgd_rm_rf (S.tmp, &err) < 0)
    fprintf (stderr, "cleanup: %s\n", err.msg);
}

TestSuite (diskfull, .init = setup, .fini = teardown, .timeout = 600);

/* Write MIB mebibytes of BYTE to PATH (appending); fsync when SYNC. 0 or an errno. */
static int
write_mib (const char *path, int mib, char byte, bool sync)
{
  static char buf[1 << 20];
  int fd = open (path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  int e = 0;

  if (fd < 0)
    return errno;
  memset (buf, byte, sizeof buf);
  for (int i = 0; i < mib && e == 0; i++)
    if (write (fd, buf, sizeof buf) != (ssize_t)sizeof buf)
      e = errno ? errno : ENOSPC;
  if (e == 0 && sync && fsync (fd) < 0)
    e = errno;
  if (close (fd) < 0 && e == 0)
    e = errno;
  return e;
}

/* The ext4 superblock of the device mounted at DIR records errors. */
static bool
fs_has_errors (const char *dir)
{
  char dev[PATH_MAX];
  unsigned char sb[0x3C];
  struct pgd_err err;

  cr_assert_eq (pgd_mount_source (dir, dev, sizeof dev, &err), 0, "%s", err.msg);
  int fd = open (dev, O_RDONLY);
  cr_assert_geq (fd, 0, "open %s", dev);
  cr_assert_eq (pread (fd, sb, sizeof sb, 1024), (ssize_t)sizeof sb);
  close (fd);
  return (sb[0x3A] | sb[0x3B] << 8) & 2;
}

Test (diskfull, put_that_cannot_flush_says_so_and_the_next_get_checks)
{
  struct pgd_create_req req = { .id = "L" };
  struct pgd_err err = { 0 };
  char *dir = NULL, path[PATH_MAX * 2], filler[PATH_MAX * 2], mark[PATH_MAX * 2];

  snprintf (filler, sizeof filler, "%s/filler", S.home);
  cr_assert_eq (write_mib (filler, FILLER_MIB, 'f', true), 0);
  cr_assert_eq (ops->create (L, &req, &err), 0, "create: %s", err.msg);
  cr_assert_eq (ops->get (L, "L", NULL, &dir, &err), 0, "get: %s", err.msg);
  snprintf (path, sizeof path, "%s/kept", dir);
  cr_assert_eq (write_mib (path, 1, 'k', true), 0, "the durable file");

  /* fill the host: fsync'ed chunks until one fails */
  int e = 0, chunks = 0;
  snprintf (path, sizeof path, "%s/fill", dir);
  while (e == 0 && chunks++ < 2 * HOST_MIB / CHUNK_MIB)
    e = write_mib (path, CHUNK_MIB, 'x', true);
  cr_assert_neq (e, 0, "%d MiB went into a %d MiB host", chunks * CHUNK_MIB, HOST_MIB);
  /* and some more that only the Put's flush would write */
  snprintf (path, sizeof path, "%s/late", dir);
  write_mib (path, CHUNK_MIB, 'l', false);
  free (dir);

  cr_assert_eq (ops->put (L, "L", &err), -1, "the Put reported a clean close");
  cr_assert (strstr (err.msg, "L") && strstr (err.msg, "flush"), "Put: %s", err.msg);
  snprintf (mark, sizeof mark, "%s/layers/L/fsck-needed", S.home);
  cr_assert_eq (access (mark, F_OK), 0, "the image is not marked for a check");

  /* space again: the Get checks the filesystem first, then hands it out clean */
  cr_assert_eq (unlink (filler), 0);
  cr_assert_eq (ops->get (L, "L", NULL, &dir, &err), 0, "get after space was freed: %s", err.msg);
  cr_assert_neq (access (mark, F_OK), 0, "the mark stayed after the check");
  cr_assert_not (fs_has_errors (dir), "handed out with errors in its superblock");
  snprintf (path, sizeof path, "%s/kept", dir);
  struct stat st;
  cr_assert_eq (stat (path, &st), 0, "the fsync'ed file is gone");
  cr_assert_eq (st.st_size, 1 << 20);
  cleanup_free char *data = NULL;
  size_t len = 0;
  cr_assert_eq (pgd_read_file (path, &data, &len, &err), 0, "%s", err.msg);
  for (size_t i = 0; i < len; i++)
    cr_assert_eq (data[i], 'k', "byte %zu of the fsync'ed file", i);
  free (dir);
  cr_assert_eq (ops->put (L, "L", &err), 0, "put: %s", err.msg);
  cr_assert_eq (ops->remove (L, "L", &err), 0, "remove: %s", err.msg);
}
