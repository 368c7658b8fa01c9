/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The change tracker: while a layer cloned from a parent is mounted read-write, a
   fanotify filesystem mark on its ext4 records which directories saw a change (by
   file handle, so renames after the event do not matter). Changes, Diff and DiffSize
   then walk only those directories (tree.c's hint). The record is only a hint: when it
   cannot be trusted the full comparison runs. On disk, layers/<id>/changes holds it
   while the layer is not mounted read-write; it is taken off disk (durably) before a
   read-write mount and written back only after a clean unmount, so a crash, a kill -9
   or a mount adopted at start leaves no record and so the full comparison. */
#ifndef PGD_TRACK_H
#define PGD_TRACK_H

#include <stdbool.h>

#include "err.h"

struct pgd_tracker;
struct pgd_diff_hint;

/* File name of the record inside a layer's image directory. */
#define PGD_TRACK_FILE "changes"

/* Start the tracker (its reader thread). The bound on recorded entries per layer is
   PGD_TRACK_MAX_ENTRIES, or the environment's PGD_TRACK_MAX (tests). */
int pgd_tracker_new (struct pgd_tracker **out, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Stop watching everything (no record is written) and free T; NULL is fine. Every
   pgd_track_* call takes T NULL too: a store without a tracker (records only dropped). */
void pgd_tracker_free (struct pgd_tracker *t);

/* Write the empty record of the layer cloned from PARENT into its image IMAGE. */
int pgd_track_create (const char *image, const char *parent, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Before mounting layer ID (image directory IMAGE, top delta TOP): load its record when
   its stamp matches TOP; when RW, take it off disk durably first. */
void pgd_track_open (struct pgd_tracker *t, const char *id, const char *image, const char *top,
                     bool rw);

/* The read-write mount of ID at DIR is up: watch its filesystem. */
void pgd_track_watch (struct pgd_tracker *t, const char *id, const char *dir);

/* Online snapshot of PARENT_ID (mounted read-write at DIR) into CHILD_ID, called while
   the filesystem is frozen: the parent's record is completed (its events read) and its
   watch ends, as at an unmount (pgd_track_close with CLEAN then saves it); the child
   gets a fresh record from this point, watching the same filesystem (none when
   tracking is off). */
void pgd_track_fork (struct pgd_tracker *t, const char *parent_id, const char *child_id,
                     const char *dir);

/* ID is unmounted (CLEAN: by a successful umount): stop watching and, when the record
   was taken for a read-write mount and is still trusted, write it back stamped with
   the top delta of IMAGE. */
void pgd_track_close (struct pgd_tracker *t, const char *id, const char *image, bool clean);

/* Forget ID's record for good (ApplyDiff writes it, a mount adopted at start). */
void pgd_track_drop (struct pgd_tracker *t, const char *id, const char *image);

/* The directories Changes/Diff/DiffSize of ID against PARENT must visit, NEW_ROOT and
   OLD_ROOT being their mounts, into HINT (empty on entry); *USE false (and the reason
   logged at debug) when the full comparison must run instead. */
int pgd_track_hint (struct pgd_tracker *t, const char *id, const char *parent, const char *new_root,
                    const char *old_root, struct pgd_diff_hint *hint, bool *use,
                    struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Most (directory, name) entries one layer's record holds; beyond, it is not trusted. */
#define PGD_TRACK_MAX_ENTRIES 65536

#endif
