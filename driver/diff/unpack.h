/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Private to ApplyDiff: what apply.c (the stream and the per-entry rules), applyfs.c
   (creating each kind of node, AUFS hardlink sources) and applymeta.c (an entry's
   metadata and data) share. apply.c uses the other two; applyfs.c uses applymeta.c. */
#ifndef PGD_UNPACK_H
#define PGD_UNPACK_H

#include <archive.h>
#include <archive_entry.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "driver.h"
#include "err.h"
#include "keymap.h"

/* A directory whose times are set after every entry. */
struct pgd_dirtime
{
  char *name; /* clean, relative to the root; "" is the root */
  struct timespec ts[2];
};

/* A regular file under .wh..wh.plnk/, kept as an unnamed file on the layer. */
struct pgd_plnk
{
  char *base;
  int fd;
  struct archive_entry *e;
};

/* The state of one ApplyDiff. */
struct pgd_apply
{
  const struct pgd_idmaps *maps;
  int fd;     /* the tar stream */
  int rootfd; /* the layer */
  struct archive *a;
  char *inbuf;      /* two read buffers, used in turn ... */
  int64_t inoff[2]; /* ... each with the stream offset ... */
  size_t inlen[2];  /* ... and length of what it holds */
  int incur;
  int64_t delivered; /* stream bytes handed to libarchive */
  bool input_eof;
  int64_t size;               /* sum of the entries' header sizes */
  struct pgd_keymap unpacked; /* clean names placed from this archive */
  struct pgd_dirtime *dirs;
  size_t ndirs;
  size_t capdirs;
  struct pgd_plnk *plnk;
  size_t nplnk;
};

/* Where metadata goes: an open FD, or BASE in directory PFD when FD is -1. */
struct pgd_meta_at
{
  int fd;
  int pfd;
  const char *base;
  bool dir;      /* times are left for the end */
  bool symlink;  /* no chmod */
  bool no_times; /* no times (a hardlink of a symlink) */
};

/* libarchive's "this worked" (a warning included). */
static inline bool
pgd_la_ok (int r)
{
  return r == ARCHIVE_OK || r == ARCHIVE_WARN;
}

/* E's access, then modification time; access is never earlier than modification. */
void pgd_apply_entry_times (struct archive_entry *e, struct timespec ts[2]);

/* Apply owner (mapped to the host), xattrs, mode and times of E, in dockerd's order. */
int pgd_apply_meta (struct pgd_apply *ap, struct archive_entry *e, const struct pgd_meta_at *at,
                    struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Write the current entry's data into FD, exactly SIZE bytes (holes kept). */
int pgd_apply_data (struct pgd_apply *ap, int fd, int64_t size, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Fill ERR from libarchive's last error, prefixed by WHAT. */
int pgd_apply_fail (struct pgd_apply *ap, const char *what, struct pgd_err *err);

/* Create entry E as BASE in directory PFD; NAME is its clean name (for symlink checks). */
int pgd_apply_create (struct pgd_apply *ap, struct archive_entry *e, int pfd, const char *base,
                      const char *name, struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Keep the regular file NAME under .wh..wh.plnk/ as a later hardlink source. */
int pgd_apply_plnk_keep (struct pgd_apply *ap, struct archive_entry *e, const char *name,
                         struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Release the kept AUFS hardlink sources. */
void pgd_apply_plnk_free (struct pgd_apply *ap);

#endif
