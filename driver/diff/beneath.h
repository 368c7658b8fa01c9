/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Safe access below a root directory: lexical path cleaning, opening directories
   without ever following a symlink or leaving the root, and recursive removal. */
#ifndef PGD_BENEATH_H
#define PGD_BENEATH_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

/* Clean the relative path IN lexically into OUT (SIZE bytes): leading and repeated
   slashes, "." components and a trailing slash go, ".." removes the component before
   it. The root comes out as "". Returns 0, or -1 when the path climbs above the root
   (ERANGE in errno) or OUT is too small (ENAMETOOLONG). */
int pgd_path_clean (const char *in, char *out, size_t size) __attribute__ ((warn_unused_result));

/* Open the directory REL ("" = ROOTFD itself) below ROOTFD as O_RDONLY|O_DIRECTORY.
   REL must be clean. No component may be a symlink (ELOOP) or a non-directory
   (ENOTDIR). With CREATE, missing components are made with mode 0600 (dockerd's
   choice). *FD receives the descriptor. ERR names REL. */
int pgd_open_dir_beneath (int rootfd, const char *rel, bool create, int *fd, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Remove NAME in directory DIRFD recursively, never following symlinks and never
   descending into another mount; a missing NAME is success. SHOWN names NAME in
   error messages. */
int pgd_remove_at (int dirfd, const char *name, const char *shown, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

/* Write "/proc/self/fd/DIRFD/NAME" into BUF, a path that reaches NAME through an
   already opened directory, for the calls that have no *at variant (lsetxattr,
   lgetxattr). Returns BUF, or NULL when it does not fit. */
char *pgd_fd_path (char *buf, size_t size, int dirfd, const char *name);

#endif
