/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A full host disk: the image server cannot write, the loop device fails its writes,
   ext4 aborts its journal and records the error in its superblock, while umount itself
   succeeds. So the flush before the unmount is checked (syncfs reports the write-back
   errors since the mount), a failure marks the image, and a marked image or an ext4
   whose superblock says it has errors is checked by e2fsck before it is handed out. */
#include "fsck.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define FSCK_MARK "fsck-needed" /* in the image directory: its ext4 must be checked */
#define EXT4_SB_OFFSET 1024
#define EXT4_SB_MAGIC_AT 0x38
#define EXT4_SB_STATE_AT 0x3A
#define EXT4_MAGIC 0xEF53
#define EXT4_STATE_ERRORS 0x0002
#define E2FSCK_UNCORRECTED 4 /* exit codes from here up: errors left, or e2fsck failed */

int
pgd_fs_flush (const char *image_dir, const char *target, struct pgd_err *err)
{
  char mark[PATH_MAX];
  cleanup_close int fd = open (target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (fd < 0)
    return errno == ENOENT ? 0 : pgd_error (err, errno, "open %s", target);
  if (syncfs (fd) == 0)
    return 0;
  int e = errno;
  snprintf (mark, sizeof mark, "%s/" FSCK_MARK, image_dir);
  int mfd = open (mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (mfd >= 0)
    close (mfd);
  else
    pgd_log (PGD_LOG_ERROR, "cannot mark %s for a check (%s): check it by hand", image_dir,
             strerror (errno));
  return pgd_error (err, e,
                    "flush of %s failed, writes not yet fsync'ed may be lost; its "
                    "filesystem is checked at its next mount",
                    target);
}

/* True when the ext4 superblock on DEV records errors. */
static bool
has_errors (const char *dev)
{
  unsigned char sb[EXT4_SB_STATE_AT + 2];
  cleanup_close int fd = open (dev, O_RDONLY | O_CLOEXEC);

  if (fd < 0 || pread (fd, sb, sizeof sb, EXT4_SB_OFFSET) != (ssize_t)sizeof sb)
    return false;
  uint16_t magic = sb[EXT4_SB_MAGIC_AT] | sb[EXT4_SB_MAGIC_AT + 1] << 8;
  uint16_t state = sb[EXT4_SB_STATE_AT] | sb[EXT4_SB_STATE_AT + 1] << 8;
  return magic == EXT4_MAGIC && (state & EXT4_STATE_ERRORS);
}

int
pgd_fs_check (const char *image_dir, const char *dev, struct pgd_err *err)
{
  char mark[PATH_MAX];
  struct pgd_err out = { 0 };
  int code;

  snprintf (mark, sizeof mark, "%s/" FSCK_MARK, image_dir);
  bool marked = access (mark, F_OK) == 0;
  if (!marked && !has_errors (dev))
    return 0;
  pgd_log (PGD_LOG_WARN, "%s: %s: running e2fsck on %s", image_dir,
           marked ? "a flush failed before its last unmount" : "its ext4 records errors", dev);
  char *preen[] = { (char *)"e2fsck", (char *)"-p", (char *)dev, NULL };
  if (pgd_run_code (preen, &code, &out) < 0)
    return pgd_error (err, out.errnum, "check %s: %s", image_dir, out.msg);
  if (code >= E2FSCK_UNCORRECTED)
    {
      /* -p stops at what it may not fix alone; the image is ours alone: fix it all */
      pgd_log (PGD_LOG_WARN, "%s: e2fsck -p: %s; running e2fsck -y", image_dir, out.msg);
      char *yes[] = { (char *)"e2fsck", (char *)"-y", (char *)dev, NULL };
      if (pgd_run_code (yes, &code, &out) < 0)
        return pgd_error (err, out.errnum, "check %s: %s", image_dir, out.msg);
    }
  if (code >= E2FSCK_UNCORRECTED)
    return pgd_error (err, EIO, "check %s: errors left in its filesystem: %s", image_dir, out.msg);
  pgd_log (PGD_LOG_WARN, "%s: e2fsck: %s (exit %d)", image_dir,
           code == 0 ? "no errors found" : "errors corrected", code);
  if (marked && unlink (mark) < 0 && errno != ENOENT)
    pgd_log (PGD_LOG_WARN, "remove %s: %s", mark, strerror (errno));
  return 0;
}
