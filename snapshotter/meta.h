/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The snapshotter's metadata: every snapshot's key, kind, parent, labels, times and
   layer ID, in memory and in one JSON file written atomically on each change. Keys are
   opaque strings that are never used as file names; each snapshot's layer has a
   generated ID. */
#ifndef PGD_META_H
#define PGD_META_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define PGD_SNAP_ID_LEN 32 /* hex digits of a generated layer ID */

/* Kinds, numbered as containerd's snapshots.v1.Kind. */
enum pgd_snap_kind
{
  PGD_SNAP_VIEW = 1,
  PGD_SNAP_ACTIVE = 2,
  PGD_SNAP_COMMITTED = 3,
};

/* One snapshot. */
struct pgd_snap
{
  char *key;
  char *parent;                 /* key of its committed parent; NULL: none */
  char id[PGD_SNAP_ID_LEN + 1]; /* its layer in the store */
  enum pgd_snap_kind kind;
  json_t *labels; /* object of strings, never NULL */
  int64_t created_ns;
  int64_t updated_ns;
  int64_t inodes; /* inodes in use in its filesystem at Commit */
  bool creating;  /* reserved by a call in flight: not yet visible, not saved */
  bool busy;      /* a Commit or Remove of it is in flight */
};

struct pgd_snaps;

/* Load the metadata file PATH (missing: empty). A damaged file fails naming it. */
int pgd_snaps_open (struct pgd_snaps **out, const char *path, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Free everything (the file stays). */
void pgd_snaps_close (struct pgd_snaps *s);

/* The mutex that guards the registry and every record in it. */
pthread_mutex_t *pgd_snaps_mutex (struct pgd_snaps *s);

/* The record of KEY, reserved ones included; NULL when absent. Locked. */
struct pgd_snap *pgd_snaps_find (struct pgd_snaps *s, const char *key);

/* Add a reserved record (creating) of KEY with a fresh layer ID; KEY must be absent.
   PARENT may be NULL. Locked. */
struct pgd_snap *pgd_snaps_add (struct pgd_snaps *s, const char *key, enum pgd_snap_kind kind,
                                const char *parent, struct pgd_err *err);

/* Remove and free REC. Locked. */
void pgd_snaps_drop (struct pgd_snaps *s, struct pgd_snap *rec);

/* How many records (reserved ones included) have KEY as their parent. Locked. */
size_t pgd_snaps_children (struct pgd_snaps *s, const char *key);

/* The number of records and the I-th one (reserved ones included). Locked. */
size_t pgd_snaps_count (struct pgd_snaps *s);
struct pgd_snap *pgd_snaps_at (struct pgd_snaps *s, size_t i);

/* Write every visible record to the file durably (tmp, fsync, rename). Locked. */
int pgd_snaps_save (struct pgd_snaps *s, struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Its name in messages and the file: "view", "active" or "committed". */
const char *pgd_snap_kind_name (enum pgd_snap_kind kind);

/* Wall-clock time in nanoseconds since the epoch (created/updated times). */
int64_t pgd_snap_now_ns (void);

#endif
