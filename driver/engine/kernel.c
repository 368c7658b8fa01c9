/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The kernel engine: libploop mounts the delta chain as /dev/ploopN (needs the ploop
   module; not runnable on hosts without it). */
#include "engine_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ploop/libploop.h>

#include "image.h"
#include "util.h"

static int
read_di (const char *image_dir, struct ploop_disk_images_data **di, struct pgd_err *err)
{
  cleanup_free char *dd = calloc (1, 2 * PATH_MAX); /* PLOOP.md §5.4 pitfall 1 */

  if (dd == NULL)
    return pgd_error (err, ENOMEM, "read %s", image_dir);
  snprintf (dd, PATH_MAX, "%s/%s", image_dir, PGD_IMAGE_DD);
  pgd_image_lib_init ();
  int rc = ploop_read_disk_descr (di, dd);
  if (rc != 0)
    return pgd_error (err, EIO, "read %s: %s (rc %d)", dd, ploop_get_last_error (), rc);
  return 0;
}

int
pgd_kernel_mount (const char *image_dir, const char *target, unsigned flags, const char *opts,
                  struct pgd_err *err)
{
  struct ploop_disk_images_data *di = NULL;
  struct ploop_mount_param mp;
  cleanup_free char *tgt = calloc (1, 2 * PATH_MAX);
  char data[PATH_MAX];
  int rc;

  if (tgt == NULL)
    return pgd_error (err, ENOMEM, "mount %s", image_dir);
  /* libploop's mount checks every delta and calls a thin one sparse (rc 11) */
  uint64_t filled;
  if (pgd_image_allocate (image_dir, &filled, err) < 0)
    return pgd_error_wrap (err, "mount %s", image_dir);
  if (read_di (image_dir, &di, err) < 0)
    return -1;
  memset (&mp, 0, sizeof mp);
  mp.ro = (flags & PGD_MOUNT_RO) ? 1 : 0;
  mp.fstype = (char *)"ext4";
  snprintf (data, sizeof data, "%s", opts ? opts : "");
  mp.mount_data = data[0] ? data : NULL;
  snprintf (tgt, PATH_MAX, "%s", target);
  /* with mkfs or resize: device only first (whole-device ext4, PLOOP.md §5.4 pitfall 5) */
  bool prep = flags & (PGD_MOUNT_MKFS | PGD_MOUNT_RESIZE);
  mp.target = prep ? NULL : tgt;
  rc = ploop_mount_image (di, &mp);
  if (rc != 0)
    {
      pgd_error (err, EIO, "ploop mount %s: %s (rc %d)", image_dir, ploop_get_last_error (), rc);
      ploop_free_diskdescriptor (di);
      return -1;
    }
  if (prep
      && (((flags & PGD_MOUNT_MKFS) ? pgd_mkfs_ext4 (mp.device, err)
                                    : pgd_resize_ext4 (mp.device, err))
              < 0
          || pgd_mount_ext4 (mp.device, target, mp.ro, opts, err) < 0))
    {
      ploop_umount_image (di);
      ploop_free_diskdescriptor (di);
      return pgd_error_wrap (err, "mount image %s", image_dir);
    }
  ploop_free_diskdescriptor (di);
  return 0;
}

int
pgd_kernel_umount (const char *image_dir, const char *target, struct pgd_err *err)
{
  struct ploop_disk_images_data *di = NULL;
  int rc;

  if (pgd_is_mountpoint (target) && pgd_umount_retry (target, TARGET_UMOUNT_TIMEOUT_MS, err) < 0)
    return pgd_error_wrap (err, "unmount image %s", image_dir);
  if (read_di (image_dir, &di, err) < 0)
    return -1;
  rc = ploop_is_mounted (di) ? ploop_umount_image (di) : 0;
  ploop_free_diskdescriptor (di);
  if (rc != 0)
    return pgd_error (err, EIO, "ploop umount %s: %s (rc %d)", image_dir, ploop_get_last_error (),
                      rc);
  return 0;
}
