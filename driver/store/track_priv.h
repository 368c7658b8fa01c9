/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Internal to the change tracker (track.c, trackhint.c). */
#ifndef PGD_TRACK_PRIV_H
#define PGD_TRACK_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "diff/diff.h"
#include "track.h"
#include "util.h"

/* One recorded entry: a directory's file handle and a name in it ("" = the directory's
   own entries changed; else a subdirectory NAME was created, removed, renamed or had
   its attributes changed). Stored as one blob: type, handle length, handle, name. */
struct track_ent
{
  int32_t type;
  uint8_t hlen;
  unsigned char data[]; /* hlen handle bytes, then the NUL-terminated name */
};

/* The in-memory record of one layer. */
struct track_rec
{
  struct track_rec *next;
  char id[PGD_ID_MAX + 1];
  char parent[PGD_ID_MAX + 1];
  pthread_mutex_t lock; /* guards everything below */
  bool trusted;
  bool taken;    /* off disk for a read-write mount: write back on a clean close */
  bool forked;   /* read to the end at an online snapshot (pgd_track_fork): FAN no longer
                    counts; closed later, off the frozen window and the request */
  int fan;       /* fanotify group, -1 when not watching */
  char why[160]; /* why it is not trusted */
  struct pgd_keymap seen;
  struct track_ent **ents;
  size_t n, cap;
};

struct pgd_tracker
{
  pthread_mutex_t lock; /* guards the list */
  struct track_rec *recs;
  int ep;   /* epoll over every group plus WAKE */
  int wake; /* eventfd: stop the reader */
  pthread_t reader;
  bool running;
  size_t max;
};

/* The record of ID, or NULL; T's lock is held. */
struct track_rec *pgd_track_find (struct pgd_tracker *t, const char *id);

/* Read every queued event of R's group into R (R locked). */
void pgd_track_drain (struct pgd_tracker *t, struct track_rec *r);

/* Stop trusting R (R locked): free its entries, stop watching; WHY is logged. */
void pgd_track_distrust (struct pgd_tracker *t, struct track_rec *r, const char *why);

#endif
