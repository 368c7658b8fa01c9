/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The routes' shared state: the driver they call and the work they have in flight
   (driver calls, ApplyDiff workers, Diff streams), which Cleanup and shutdown wait for
   and, past a bound, cut. Used by routes.c, stream.c and the server. */
#ifndef PGD_INFLIGHT_H
#define PGD_INFLIGHT_H

#include <pthread.h>
#include <stdbool.h>

#include "driver.h"
#include "err.h"

/* How long Cleanup and shutdown wait for Diff streams in flight before cutting their
   connections, and then for the cut streams to let their layers go. */
#define PGD_STREAM_DRAIN_MS 5000
#define PGD_STREAM_CUT_MS 2000

/* A Diff response in flight, as Cleanup and shutdown see it. */
struct pgd_stream_ref
{
  struct pgd_stream_ref *next;
  const char *id; /* the layer streamed */
  int conn_fd;    /* our own dup of the connection's socket: shutdown(2) cuts it */
};

/* Shared by every connection: the driver and a count of requests in flight. */
struct pgd_routes
{
  const struct pgd_ops *ops;
  void *ctx;
  pthread_mutex_t lock;
  pthread_cond_t idle;            /* signalled when ACTIVE drops to 0 and when a stream ends */
  unsigned active;                /* driver calls, ApplyDiff workers and Diff streams in flight */
  struct pgd_stream_ref *streams; /* Diff streams whose layers are still held */
};

/* Set R up to serve OPS with CTX (the driver object). */
int pgd_routes_init (struct pgd_routes *r, const struct pgd_ops *ops, void *ctx,
                     struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Release what pgd_routes_init set up; nothing may be in flight. */
void pgd_routes_destroy (struct pgd_routes *r);

/* Count one more piece of work in flight. */
void pgd_routes_hold (struct pgd_routes *r);

/* Count one piece of work done; wakes pgd_routes_wait_idle at zero. */
void pgd_routes_release (struct pgd_routes *r);

/* Wait up to TIMEOUT_MS for nothing to be in flight; true when idle. */
bool pgd_routes_wait_idle (struct pgd_routes *r, unsigned timeout_ms);

/* Register REF, a Diff stream that holds its layers until pgd_routes_stream_end. */
void pgd_routes_stream_begin (struct pgd_routes *r, struct pgd_stream_ref *ref);

/* REF has released its layers: unregister it and wake the waiters. */
void pgd_routes_stream_end (struct pgd_routes *r, struct pgd_stream_ref *ref);

/* Give Diff streams in flight up to PGD_STREAM_DRAIN_MS to end, then cut the
   connections of those left (logged) and wait up to PGD_STREAM_CUT_MS for them to
   let their layers go; WHO names the caller in the log. True when none is left. */
bool pgd_routes_drain_streams (struct pgd_routes *r, const char *who);

/* Cut the connection of every Diff stream in flight (logged), without waiting. */
void pgd_routes_cut_streams (struct pgd_routes *r, const char *who);

#endif
