/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A small gRPC server on grpc's C core: unary and server-streaming methods looked up
   by their full path, each call served on its own thread. Knows nothing of snapshots. */
#ifndef PGD_RPC_H
#define PGD_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* The gRPC status codes the faces answer with. */
enum pgd_rpc_code
{
  PGD_RPC_OK = 0,
  PGD_RPC_UNKNOWN = 2,
  PGD_RPC_INVALID_ARGUMENT = 3,
  PGD_RPC_NOT_FOUND = 5,
  PGD_RPC_ALREADY_EXISTS = 6,
  PGD_RPC_FAILED_PRECONDITION = 9,
  PGD_RPC_UNIMPLEMENTED = 12,
  PGD_RPC_INTERNAL = 13,
};

struct pgd_rpc_server;
struct pgd_rpc_call;

/* A method: REQ/LEN is the request message (protobuf bytes). Reply with pgd_rpc_send
   (once for a unary method, once per message for a stream), then return 0; or return
   -1 with ERR, whose errnum becomes the status code (pgd_rpc_code_of). */
typedef int (*pgd_rpc_handler) (void *ctx, struct pgd_rpc_call *call, const uint8_t *req,
                                size_t len, struct pgd_err *err);

/* One entry of the method table: "/package.Service/Method" and its handler. */
struct pgd_rpc_method
{
  const char *path;
  pgd_rpc_handler fn;
};

/* Listen on the Unix socket PATH (a stale socket there is replaced; the directory is
   made) and serve METHODS (N entries, kept by reference) with CTX in a thread. */
int pgd_rpc_start (struct pgd_rpc_server **out, const char *path,
                   const struct pgd_rpc_method *methods, size_t n, void *ctx, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Send one response message of LEN bytes on CALL; fails when the client went away. */
int pgd_rpc_send (struct pgd_rpc_call *call, const void *msg, size_t len, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Stop accepting, cancel calls in flight, wait up to GRACE_MS for their threads; true
   when all ended (then S is freed), false when some still run (S is left allocated). */
bool pgd_rpc_stop (struct pgd_rpc_server *s, unsigned grace_ms);

/* The status code for an errno: ENOENT NOT_FOUND, EEXIST ALREADY_EXISTS, EINVAL and
   ENAMETOOLONG INVALID_ARGUMENT, EBUSY ENOTEMPTY EROFS FAILED_PRECONDITION, ENOSYS
   UNIMPLEMENTED, anything else UNKNOWN. */
enum pgd_rpc_code pgd_rpc_code_of (int errnum);

#endif
