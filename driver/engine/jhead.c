/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Rewind the recorded head of an ext4 journal (see jhead.h). Reads the ext4 superblock,
   finds logical block 0 of the journal inode through its extent tree, and rewrites the
   journal superblock's s_head when the journal is empty. */
#include "jhead.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

/* ext4 superblock (1024 bytes at byte 1024), little-endian */
#define SB_OFFSET 1024
#define SB_LOG_BLOCK_SIZE 0x18
#define SB_MAGIC 0x38
#define SB_STATE 0x3A
#define SB_INODE_SIZE 0x58
#define SB_FEATURE_COMPAT 0x5C
#define SB_FEATURE_INCOMPAT 0x60
#define SB_JOURNAL_INUM 0xE0
#define SB_DESC_SIZE 0xFE
#define SB_INODES_PER_GROUP 0x28
#define EXT4_MAGIC 0xEF53
#define STATE_VALID 0x0001
#define COMPAT_HAS_JOURNAL 0x0004
#define INCOMPAT_RECOVER 0x0004
#define INCOMPAT_JOURNAL_DEV 0x0008
#define INCOMPAT_64BIT 0x0080
/* group descriptor: inode table location */
#define GD_INODE_TABLE_LO 0x08
#define GD_INODE_TABLE_HI 0x28
/* inode: the extent tree root */
#define INODE_FLAGS 0x20
#define INODE_BLOCK 0x28
#define INODE_FLAG_EXTENTS 0x80000
#define EXTENT_MAGIC 0xF30A
#define EXTENT_MAX_DEPTH 5

/* jbd2 superblock, big-endian */
#define JSB_SIZE 1024
#define JBD2_MAGIC 0xC03B3998
#define JBD2_SUPERBLOCK_V2 4
#define JSB_BLOCKTYPE 0x04
#define JSB_START 0x1C
#define JSB_INCOMPAT 0x28
#define JSB_CHECKSUM_TYPE 0x50
#define JSB_HEAD 0x58
#define JSB_CHECKSUM 0xFC
#define JBD2_INCOMPAT_CSUM_V2 0x08
#define JBD2_INCOMPAT_CSUM_V3 0x10
#define JBD2_CRC32C_CHKSUM 4

#define MAX_BLOCK 65536

static uint16_t
le16 (const unsigned char *p)
{
  return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t
le32 (const unsigned char *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t
be32 (const unsigned char *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void
put_be32 (unsigned char *p, uint32_t v)
{
  p[0] = v >> 24;
  p[1] = v >> 16;
  p[2] = v >> 8;
  p[3] = v;
}

/* crc32c (Castagnoli), no final inversion: jbd2_chksum (~0, ...) */
static uint32_t
crc32c (uint32_t crc, const unsigned char *p, size_t n)
{
  while (n--)
    {
      crc ^= *p++;
      for (int k = 0; k < 8; k++)
        crc = (crc >> 1) ^ (0x82F63B78u & -(crc & 1));
    }
  return crc;
}

static uint32_t
jsb_checksum (const unsigned char *jsb)
{
  unsigned char copy[JSB_SIZE];

  memcpy (copy, jsb, JSB_SIZE);
  memset (copy + JSB_CHECKSUM, 0, 4);
  return crc32c (~0u, copy, JSB_SIZE);
}

static int
read_at (int fd, void *buf, size_t n, uint64_t off, const char *disk, struct pgd_err *err)
{
  ssize_t r = pread (fd, buf, n, (off_t)off);
  if (r < 0)
    return pgd_error (err, errno, "read %s at %llu", disk, (unsigned long long)off);
  if ((size_t)r != n)
    return pgd_error (err, EIO, "short read of %s at %llu", disk, (unsigned long long)off);
  return 0;
}

/* Physical block of logical block 0 of the extent tree rooted at ROOT (60 bytes); 0
   when there is none or the tree is not understood. */
static int
first_block (int fd, const char *disk, unsigned bs, const unsigned char *root, uint64_t *pblk,
             struct pgd_err *err)
{
  unsigned char node[MAX_BLOCK];
  const unsigned char *h = root;

  *pblk = 0;
  for (int level = 0; level <= EXTENT_MAX_DEPTH; level++)
    {
      if (le16 (h) != EXTENT_MAGIC || le16 (h + 2) == 0)
        return 0;
      const unsigned char *e = h + 12; /* first entry: the one that starts at block 0 */
      if (le32 (e) != 0)
        return 0;
      if (le16 (h + 6) == 0)
        {
          *pblk = (uint64_t)le16 (e + 6) << 32 | le32 (e + 8);
          return 0;
        }
      uint64_t leaf = (uint64_t)le16 (e + 8) << 32 | le32 (e + 4);
      if (read_at (fd, node, bs, leaf * bs, disk, err) < 0)
        return -1;
      h = node;
    }
  return 0;
}

/* The byte offset of the journal superblock of the ext4 in FD; 0 when not applicable. */
static int
jsb_offset (int fd, const char *disk, uint64_t *off, struct pgd_err *err)
{
  unsigned char sb[1024], gd[64], inode[256];

  *off = 0;
  if (read_at (fd, sb, sizeof sb, SB_OFFSET, disk, err) < 0)
    return -1;
  uint32_t log = le32 (sb + SB_LOG_BLOCK_SIZE);
  if (le16 (sb + SB_MAGIC) != EXT4_MAGIC || log > 6 || !(le16 (sb + SB_STATE) & STATE_VALID)
      || !(le32 (sb + SB_FEATURE_COMPAT) & COMPAT_HAS_JOURNAL)
      || (le32 (sb + SB_FEATURE_INCOMPAT) & (INCOMPAT_RECOVER | INCOMPAT_JOURNAL_DEV)))
    return 0;
  unsigned bs = 1024u << log;
  uint32_t ino = le32 (sb + SB_JOURNAL_INUM);
  uint32_t ipg = le32 (sb + SB_INODES_PER_GROUP);
  unsigned isize = le16 (sb + SB_INODE_SIZE);
  if (ino == 0 || ipg == 0 || ino > ipg || isize < 128 || isize > sizeof inode)
    return 0; /* the journal inode is in group 0 (inode 8) */
  /* group 0's descriptor: the block after the superblock's (also with meta_bg) */
  uint64_t gdt = (bs == 1024 ? 2 : 1) * (uint64_t)bs;
  bool is64 = le32 (sb + SB_FEATURE_INCOMPAT) & INCOMPAT_64BIT;
  if (read_at (fd, gd, sizeof gd, gdt, disk, err) < 0)
    return -1;
  uint64_t itable = le32 (gd + GD_INODE_TABLE_LO);
  if (is64 && le16 (sb + SB_DESC_SIZE) >= 64)
    itable |= (uint64_t)le32 (gd + GD_INODE_TABLE_HI) << 32;
  if (read_at (fd, inode, isize, itable * bs + (uint64_t)(ino - 1) * isize, disk, err) < 0)
    return -1;
  if (!(le32 (inode + INODE_FLAGS) & INODE_FLAG_EXTENTS))
    return 0;
  uint64_t pblk;
  if (first_block (fd, disk, bs, inode + INODE_BLOCK, &pblk, err) < 0)
    return -1;
  *off = pblk * bs;
  return 0;
}

int
pgd_jhead_rewind (const char *disk, bool *rewound, struct pgd_err *err)
{
  unsigned char jsb[JSB_SIZE];
  uint64_t off;

  *rewound = false;
  int fd = open (disk, O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return errno == EROFS || errno == EACCES || errno == EPERM
               ? 0
               : pgd_error (err, errno, "open %s", disk);
  int ret = jsb_offset (fd, disk, &off, err);
  if (ret == 0 && off != 0)
    ret = read_at (fd, jsb, sizeof jsb, off, disk, err);
  if (ret < 0 || off == 0 || be32 (jsb) != JBD2_MAGIC
      || be32 (jsb + JSB_BLOCKTYPE) != JBD2_SUPERBLOCK_V2 || be32 (jsb + JSB_START) != 0
      || be32 (jsb + JSB_HEAD) == 0)
    goto out;
  bool csum = be32 (jsb + JSB_INCOMPAT) & (JBD2_INCOMPAT_CSUM_V2 | JBD2_INCOMPAT_CSUM_V3);
  if (csum
      && (jsb[JSB_CHECKSUM_TYPE] != JBD2_CRC32C_CHKSUM
          || jsb_checksum (jsb) != be32 (jsb + JSB_CHECKSUM)))
    goto out; /* not the layout we know: leave it */
  put_be32 (jsb + JSB_HEAD, 0);
  if (csum)
    put_be32 (jsb + JSB_CHECKSUM, jsb_checksum (jsb));
  ssize_t w = pwrite (fd, jsb, sizeof jsb, (off_t)off);
  if (w != (ssize_t)sizeof jsb)
    ret = pgd_error (err, w < 0 ? errno : EIO, "write the journal superblock of %s", disk);
  else if (fsync (fd) < 0)
    ret = pgd_error (err, errno, "fsync %s", disk);
  else
    *rewound = true;
out:
  close (fd);
  return ret;
}
