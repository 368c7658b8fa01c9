/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ext4 on a device, for both engines: make, grow, mount, and unmount with retries. */
#include "engine_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/* Fast mkfs; the kernel must then not zero inode tables behind our back
   (noinit_itable) or every layer would allocate clusters for them. */
#ifndef MKFS_EXT4_EXTENDED
#define MKFS_EXT4_EXTENDED "lazy_itable_init=1,lazy_journal_init=1,nodiscard"
#endif
/* Every cluster a layer touches is copied up whole, so a layer's metadata writes should
   land in few clusters (bench/createcost.sh, README "Disk per container"):
   - meta_bg instead of resize_inode: no 4 MiB of reserved GDT between the superblock and
     the bitmaps; offline grow (resize2fs) still works, it adds descriptor blocks in the
     new meta groups;
   - few, large flex groups (-G, see flex_groups).
   Not inline_data: it saved one more cluster of -init, but test_track's random workloads
   then found changes the change tracker had not seen. */
#ifndef MKFS_EXT4_FEATURES
#define MKFS_EXT4_FEATURES "meta_bg,^resize_inode"
#endif
/* Beyond this many groups meta_bg saves nothing (1 TiB: the same 11 clusters of -init)
   and costs mounts: its descriptor blocks lie one per 64 groups across the disk, and a
   cold mount of a 1 TiB clone read them in 163-218 ms instead of 75-94. */
#define META_BG_MAX_GROUPS 1024
#define EXT4_GROUP_BYTES (32768ULL * 4096) /* blocks per group x block size (4 KiB) */
#define FLEX_GROUPS_MIN 16                 /* mke2fs's default */
#define FLEX_GROUPS_MAX (1U << 20)         /* 128 TiB; ext4 allows 2^31 */
#ifndef RW_MOUNT_DATA
#define RW_MOUNT_DATA "noinit_itable"
#endif
#define RO_MOUNT_DATA "noload"
/* atime updates of files read from a lower layer would copy inode-table clusters into
   every container's top delta (measured: 4 of 10 clusters of a small container) */
#ifndef RW_MOUNT_FLAGS
#define RW_MOUNT_FLAGS MS_NOATIME
#endif

int
pgd_umount_retry (const char *path, unsigned timeout_ms, struct pgd_err *err)
{
  uint64_t deadline = pgd_now_ns () + (uint64_t)timeout_ms * 1000000ULL;
  unsigned nap = 1;

  while (umount2 (path, 0) < 0)
    {
      if (errno == EINVAL || errno == ENOENT)
        return 0; /* not mounted */
      if (errno != EBUSY || pgd_now_ns () >= deadline)
        return pgd_error (err, errno, "umount %s", path);
      pgd_sleep_ms (nap);
      if (nap < 64)
        nap *= 2;
    }
  return 0;
}

/* The flex group size for DEV. ext4 places a new top-level directory (/proc, /sys, /dev
   of every -init layer) in the flex group with the most free inodes, and at the start of
   it: with the largest power of two below the number of groups, the first flex group is
   the larger one and takes them all next to the root inode (10 GiB: 80 groups, -G 64).
   With a single flex group ext4 falls back to spreading them one group each, every
   group's inode table in another cluster; that is left only where the number of groups
   is a power of two itself (1 TiB), where two equal flex groups spread them too. */
static int
flex_groups (const char *dev, unsigned *flex, uint64_t *ngroups, struct pgd_err *err)
{
  uint64_t bytes = 0;
  int fd = open (dev, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    return pgd_error (err, errno, "open %s", dev);
  int rc = ioctl (fd, BLKGETSIZE64, &bytes);
  int saved = errno;
  close (fd);
  if (rc < 0)
    return pgd_error (err, saved, "size of %s", dev);
  uint64_t groups = (bytes + EXT4_GROUP_BYTES - 1) / EXT4_GROUP_BYTES;
  *ngroups = groups;
  *flex = FLEX_GROUPS_MIN;
  while ((uint64_t)*flex * 2 < groups && *flex < FLEX_GROUPS_MAX)
    *flex <<= 1;
  if ((uint64_t)*flex * 2 == groups)
    *flex <<= 1; /* a power of two: one flex group */
  return 0;
}

int
pgd_mkfs_ext4 (const char *dev, struct pgd_err *err)
{
  unsigned flex = FLEX_GROUPS_MIN;
  uint64_t groups = 0;
  char g[16];

  if (flex_groups (dev, &flex, &groups, err) < 0)
    return pgd_error_wrap (err, "mkfs.ext4 on %s", dev);
  snprintf (g, sizeof g, "%u", flex);
  char *argv[] = { (char *)"mkfs.ext4",
                   (char *)"-q",
                   (char *)"-F",
                   (char *)"-m",
                   (char *)"0",
                   (char *)"-O",
                   (char *)(groups <= META_BG_MAX_GROUPS ? MKFS_EXT4_FEATURES : "resize_inode"),
                   (char *)"-G",
                   g,
                   (char *)"-E",
                   (char *)MKFS_EXT4_EXTENDED,
                   (char *)dev,
                   NULL };
  return pgd_run (argv, err);
}

/* Offline grow of a cleanly unmounted ext4 to the size of DEV. -f: resize2fs would
   otherwise want a fresh e2fsck -f first; the filesystem was closed cleanly by us. */
int
pgd_resize_ext4 (const char *dev, struct pgd_err *err)
{
  char *argv[] = { (char *)"resize2fs", (char *)"-f", (char *)dev, NULL };
  return pgd_run (argv, err);
}

/* With one flex group of thousands of groups (1 TiB: 8192) ext4 sizes its block bitmap
   prefetch by the flex group, and every block allocation then walks that many groups
   (perf: ext4_mb_prefetch, ext4_mb_prefetch_fini): a mkdir took 90-200 ms instead of
   4. Keep it at what mke2fs's default flex groups of 16 give (8 x 16). */
#define MB_PREFETCH_MAX 128

static void
cap_mb_prefetch (const char *dev)
{
  static const char *const knobs[] = { "mb_prefetch", "mb_prefetch_limit" };
  const char *name = strrchr (dev, '/') ? strrchr (dev, '/') + 1 : dev;

  for (size_t i = 0; i < sizeof knobs / sizeof knobs[0]; i++)
    {
      char path[PATH_MAX], buf[32];
      snprintf (path, sizeof path, "/sys/fs/ext4/%s/%s", name, knobs[i]);
      int fd = open (path, O_RDWR | O_CLOEXEC);
      if (fd < 0)
        continue; /* an older kernel: nothing to cap */
      ssize_t n = read (fd, buf, sizeof buf - 1);
      if (n > 0)
        {
          buf[n] = '\0';
          if (strtoul (buf, NULL, 10) > MB_PREFETCH_MAX)
            {
              int len = snprintf (buf, sizeof buf, "%d\n", MB_PREFETCH_MAX);
              if (pwrite (fd, buf, (size_t)len, 0) != len)
                pgd_log (PGD_LOG_WARN, "%s: %s", path, strerror (errno));
            }
        }
      close (fd);
    }
}

int
pgd_mount_ext4 (const char *dev, const char *target, bool ro, const char *opts, struct pgd_err *err)
{
  char data[PATH_MAX];

  snprintf (data, sizeof data, "%s%s%s", ro ? RO_MOUNT_DATA : RW_MOUNT_DATA,
            opts && *opts ? "," : "", opts && *opts ? opts : "");
  if (mount (dev, target, "ext4", ro ? MS_RDONLY : RW_MOUNT_FLAGS, data) < 0)
    return pgd_error (err, errno, "mount %s on %s (%s)", dev, target, data);
  if (!ro)
    cap_mb_prefetch (dev);
  return 0;
}
