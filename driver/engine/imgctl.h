/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The image server's control node: a write-only file beside "disk" in the server's FUSE
   mount. One write() is one command, answered synchronously: the write returns its
   length when the command succeeded, else fails with the command's errno. Only root
   (the plugin) can open it: the FUSE mount is private to its owner.

   Commands (fields end with '\n'; paths are absolute):
     snapshot\nTOP\nDD\nSTATUS\n   online snapshot (pgd_chain_snapshot) onto the empty
                                  delta TOP; the server then serves the image of DD
                                  (its lock taken) and writes its exit status to STATUS */
#ifndef PGD_IMGCTL_H
#define PGD_IMGCTL_H

#include <stddef.h>

#include "chain.h"
#include "err.h"

#define PGD_IMGCTL_NAME ".control"
#define PGD_IMGCTL_SNAPSHOT "snapshot"

/* Run the command CMD (LEN bytes, not NUL-terminated) on CHAIN. After a snapshot *DD
   and *STATUS are the new image's paths (malloc'd; the caller frees them); untouched
   otherwise. EINVAL for a malformed or unknown command. */
int pgd_imgctl_run (struct pgd_chain *chain, const char *cmd, size_t len, char **dd, char **status,
                    struct pgd_err *err) __attribute__ ((warn_unused_result, nonnull (1, 2, 4, 5)));

#endif
