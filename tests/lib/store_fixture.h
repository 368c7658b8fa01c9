/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The layer-store fixture of the in-process suites: a store on the real user engine in
   a fresh /var/tmp directory, Init'ed, and a teardown that leaves nothing behind
   (mounts, image servers, loop devices, the tree) whatever the test did. Assertions
   are Criterion's: call these from tests and fixtures only. */
#ifndef PGD_STORE_FIXTURE_H
#define PGD_STORE_FIXTURE_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include "store/layers.h"

struct tl_store
{
  char tmp[PATH_MAX]; /* the test's directory: Home and state live below it */
  char home[PATH_MAX + 16];
  char state[PATH_MAX + 16]; /* the persisted Init */
  char exe[PATH_MAX];        /* BUILD/ploop-graphdriver (PGD_BUILD, default build) */
  unsigned linger_ms;        /* idle-mount linger of the next open (default 0) */
  unsigned stall_ms;         /* image-server stall bound of the next open (0: none) */
  struct pgd_layers *l;      /* NULL while closed */
};

/* Make S's directory /var/tmp/pgd-NAME.XXXXXX and fill S's paths (Home, state, the
   binary); nothing is opened. */
void tl_store_prepare (struct tl_store *s, const char *name);

/* tl_store_prepare, then open a store there and Init it. */
void tl_store_setup (struct tl_store *s, const char *name);

/* Open the store of S (state from S->state, no Init); 0 or -1 with ERR. */
int tl_store_open_rc (struct tl_store *s, struct pgd_err *err);

/* Open the store of S or fail the test. */
void tl_store_open (struct tl_store *s);

/* Close the store of S (held mounts stay, as on a plugin exit). */
void tl_store_close (struct tl_store *s);

/* Shut the store down and remove every trace of the test: mounts, image servers and
   loop devices below S->tmp, then the tree. Never fails the test. */
void tl_store_teardown (struct tl_store *s);

/* Pids of image servers serving anything below DIR, at most MAX into OUT: the count. */
int tl_servers_under (const char *dir, pid_t *out, int max);

/* Wait, without a time limit, until PID has exited. */
void tl_wait_gone (pid_t pid);

/* Write MIB mebibytes into the new file DIR/NAME, fsync'ed when SYNC, or fail the test. */
void tl_fill (const char *dir, const char *name, int mib, bool sync);

/* Store operations that fail the test on error. */
void tl_create (struct tl_store *s, const char *id, const char *parent, bool rw);
char *tl_get (struct tl_store *s, const char *id); /* the directory, malloc'd */
void tl_put (struct tl_store *s, const char *id);
void tl_remove (struct tl_store *s, const char *id);

#endif
