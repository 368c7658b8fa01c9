/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The two streaming endpoints: ApplyDiff (chunked tar in, fed through a pipe to a
   worker thread running the driver) and Diff (a worker thread writes the tar into a
   pipe that a chunked response reads). */
#ifndef PGD_STREAM_H
#define PGD_STREAM_H

#include <microhttpd.h>
#include <stdint.h>

#include "driver.h"
#include "err.h"
#include "routes.h"

struct pgd_apply;

/* Start ApplyDiff of ID on PARENT (NULL = none): a pipe and a worker thread running
   ops->apply_diff on its read end. Counts as work in flight on R until freed. */
int pgd_apply_start (struct pgd_apply **out, struct pgd_routes *r, const char *id,
                     const char *parent, struct pgd_err *err) __attribute__ ((warn_unused_result));

/* Hand LEN upload bytes to the worker (blocking); once the worker has stopped
   reading, the bytes are dropped so the upload can still be drained. */
void pgd_apply_feed (struct pgd_apply *a, const char *data, size_t len);

/* End of upload: close the pipe, wait for the worker and return its result. */
int pgd_apply_finish (struct pgd_apply *a, int64_t *size, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Free A; an unfinished worker gets EOF and is waited for. NULL is fine. */
void pgd_apply_free (struct pgd_apply *a);

/* Open the Diff of ID against PARENT (NULL = none) and return a chunked response that
   streams the tar on CONN; errors before the first byte come back as -1 with ERR. A
   failure after streaming started cuts the connection without the final chunk. The
   stream is registered on R until its layers are released (pgd_routes_drain_streams). */
int pgd_diff_response (struct pgd_routes *r, struct MHD_Connection *conn, const char *id,
                       const char *parent, struct MHD_Response **out, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

#endif
