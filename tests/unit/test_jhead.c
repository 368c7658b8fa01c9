/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The journal head rewind (engine/jhead.c) on a real ext4 in a plain file, mounted by
   the kernel through a loop device: after a clean unmount the recorded head goes back
   to 0, the journal superblock's checksum stays valid (e2fsck -fn), and the kernel
   mounts and journals again on it. Needs root and loop devices; a kernel that records
   no head (before 6.5) is a skip. */
#include "ploop_fixture.h"

#include "engine/jhead.h"

static char root[PATH_MAX], disk[PATH_MAX], mnt[PATH_MAX];

static void
setup (void)
{
  fx_tmpdir (root, sizeof root, "jhead");
  snprintf (disk, sizeof disk, "%s/disk", root);
  snprintf (mnt, sizeof mnt, "%s/mnt", root);
  cr_assert_eq (mkdir (mnt, 0755), 0);
}

static void
teardown (void)
{
  if (root[0] == '\0')
    return;
  fx_sh ("umount -l '%s' 2>/dev/null; rm -rf '%s'", mnt, root);
}

TestSuite (jhead, .init = setup, .fini = teardown);

/* s_head of DISK's journal superblock (big-endian u32 at 0x58 of journal block 0). */
static long
journal_head (void)
{
  char out[64];

  cr_assert_eq (fx_sh_out (out, sizeof out,
                           "b=$(debugfs -R 'bmap <8> 0' '%s' 2>/dev/null) && "
                           "od -An -tu1 -j $((b * 4096 + 88)) -N4 '%s' | "
                           "awk '{print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4}'",
                           disk, disk),
                0);
  cr_assert_neq (out[0], '\0', "no journal head read from %s", disk);
  return atol (out);
}

/* Mount DISK, write a file, unmount: the kernel journals and records its head. */
static void
write_cycle (int n)
{
  cr_assert_eq (fx_sh ("mount -o loop '%s' '%s' && echo %d > '%s/f%d' && umount '%s'", disk, mnt, n,
                       mnt, n, mnt),
                0, "mount, write and unmount %s", disk);
}

static void
rewind_ok (bool expect)
{
  struct pgd_err err = { 0 };
  bool rewound = !expect;

  cr_assert_eq (pgd_jhead_rewind (disk, &rewound, &err), 0, "%s", err.msg);
  cr_assert_eq (rewound, expect);
}

Test (jhead, rewound_after_unmount_and_fsck_clean)
{
  cr_assert_eq (
      fx_sh ("truncate -s 256M '%s' && mkfs.ext4 -q -F -b 4096 -O meta_bg,^resize_inode '%s'", disk,
             disk),
      0);
  rewind_ok (false); /* mke2fs records no head */
  write_cycle (1);
  if (journal_head () == 0)
    cr_skip_test ("this kernel (< 6.5?) records no journal head at unmount");
  rewind_ok (true);
  cr_expect_eq (journal_head (), 0);
  cr_expect_eq (fx_sh ("e2fsck -fn '%s' >/dev/null 2>&1", disk), 0, "e2fsck after the rewind");
  /* the kernel takes it: mounts, logs from the start, records a head again */
  write_cycle (2);
  cr_expect_neq (journal_head (), 0);
  cr_expect_eq (fx_sh ("e2fsck -fn '%s' >/dev/null 2>&1", disk), 0);
  rewind_ok (true);
  rewind_ok (false); /* nothing left to do */
  cr_expect_eq (fx_sh ("mount -o loop,ro '%s' '%s' && cat '%s/f1' '%s/f2' | tr -d '\\n' | "
                       "grep -qx 12; r=$?; umount '%s'; exit $r",
                       disk, mnt, mnt, mnt, mnt),
                0, "the files written before and after the rewind");
}

Test (jhead, leaves_anything_else_alone)
{
  unsigned char zeros[8192] = { 0 };
  int fd = open (disk, O_WRONLY | O_CREAT | O_TRUNC, 0600);

  cr_assert_geq (fd, 0);
  cr_assert_eq (write (fd, zeros, sizeof zeros), (ssize_t)sizeof zeros);
  close (fd);
  rewind_ok (false); /* no ext4 */
  cr_assert_eq (fx_sh ("truncate -s 64M '%s' && mkfs.ext4 -q -F -O ^has_journal '%s'", disk, disk),
                0);
  rewind_ok (false); /* no journal */
}
