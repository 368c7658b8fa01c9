/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Small shared helpers: cleanup attributes, ID validation, files, processes. */
#ifndef PGD_UTIL_H
#define PGD_UTIL_H

#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "err.h"

#define PGD_WUR __attribute__ ((warn_unused_result))

void pgd_freep (void *p);
void pgd_closep (int *fd);
void pgd_fclosep (FILE **f);
void pgd_closedirp (DIR **d);
void pgd_unlockp (pthread_mutex_t **m);

/* Scope-bound cleanups: the resource is released when the variable leaves scope.
   Hand ownership on by setting the variable to NULL (or -1 for fds). */
#define cleanup_free __attribute__ ((cleanup (pgd_freep)))
#define cleanup_close __attribute__ ((cleanup (pgd_closep)))
#define cleanup_fclose __attribute__ ((cleanup (pgd_fclosep)))
#define cleanup_dir __attribute__ ((cleanup (pgd_closedirp)))

#define PGD_CAT2(a, b) a##b
#define PGD_CAT(a, b) PGD_CAT2 (a, b)

/* Lock M until the end of the enclosing scope. */
#define PGD_SCOPED_LOCK(m)                                                                         \
  __attribute__ ((cleanup (pgd_unlockp), unused)) pthread_mutex_t *PGD_CAT (pgd_scoped_lock_,      \
                                                                            __LINE__)              \
      = (pthread_mutex_lock (m), (m))

/* Maximum length of a layer ID in bytes. */
#define PGD_ID_MAX 255

/* True when ID is a plain file name Docker may use: 1..255 bytes, not "." or "..",
   no '/', no control characters. On false, ERR (if given) names the problem. */
bool pgd_id_valid (const char *id, struct pgd_err *err);

/* A directory stream on a duplicate of the directory FD (FD stays open and keeps its
   offset); NULL with ERR naming SHOWN. Close with closedir (cleanup_dir). */
DIR *pgd_opendir_dup (int fd, const char *shown, struct pgd_err *err);

/* Next entry of D other than "." and "..": 1 with *DE set, 0 at the end, -1 on a read
   error (ERR names SHOWN). */
int pgd_readdir (DIR *d, struct dirent **de, const char *shown, struct pgd_err *err) PGD_WUR;

/* mkdir -p PATH with MODE for the directories it creates. */
int pgd_mkdir_p (const char *path, mode_t mode, struct pgd_err *err) PGD_WUR;

/* rm -rf PATH without crossing into other mounts; missing PATH is success. */
int pgd_rm_rf (const char *path, struct pgd_err *err) PGD_WUR;

/* fsync the directory PATH. */
int pgd_fsync_dir (const char *path, struct pgd_err *err) PGD_WUR;

/* Write LEN bytes to PATH durably: PATH.tmp, fsync, rename, fsync of the directory. */
int pgd_write_file_atomic (const char *path, const void *data, size_t len,
                           struct pgd_err *err) PGD_WUR;

enum
{
  PGD_WRITE_NO_DIRSYNC = 1 << 0, /* the rename need not be durable (old state is safe) */
  PGD_WRITE_NO_FSYNC = 1 << 1,   /* nothing need be durable (a torn file is safe) */
};

/* pgd_write_file_atomic with less durability, by FLAGS (PGD_WRITE_*): still all or
   nothing when it survives. */
int pgd_write_file_as (const char *path, const void *data, size_t len, unsigned flags,
                       struct pgd_err *err) PGD_WUR;

/* Read the whole (small) file PATH into a NUL-terminated malloc'd buffer. */
int pgd_read_file (const char *path, char **data, size_t *len, struct pgd_err *err) PGD_WUR;

/* Run ARGV (argv[0] looked up in PATH), wait, and fail unless it exits 0.
   Its stderr is captured into the error message. */
int pgd_run (char *const argv[], struct pgd_err *err) PGD_WUR;

/* Run ARGV like pgd_run, its exit code into *CODE: 0 when it ran to an exit (a code other
   than 0 also fills ERR with its stderr), -1 when it could not run or was killed. */
int pgd_run_code (char *const argv[], int *code, struct pgd_err *err) PGD_WUR;

/* Parse a Docker-style size ("10G", "512M", "1.5g", "1048576"; binary units). */
int pgd_parse_size (const char *s, uint64_t *out, struct pgd_err *err) PGD_WUR;

/* snprintf for a path whose length the caller has bounded (Home at Init to PATH_MAX -
   512, IDs to PGD_ID_MAX, names to NAME_MAX): a truncation would break that bound, so
   it aborts with a message instead of handing a wrong path on. */
void pgd_pathf (char *buf, size_t size, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

/* Monotonic clock in nanoseconds. */
uint64_t pgd_now_ns (void);

/* The pgd_now_ns time AT as a CLOCK_MONOTONIC deadline, for pthread_cond_timedwait on a
   condition variable made with that clock. */
struct timespec pgd_timespec_at (uint64_t at);

/* Milliseconds since SINCE (a pgd_now_ns value). */
unsigned pgd_elapsed_ms (uint64_t since);

/* Sleep MS milliseconds (resumed after a signal). */
void pgd_sleep_ms (unsigned ms);

/* The mount point (5th field) of a /proc/self/mountinfo LINE, decoded in place, or
   NULL; LINE is cut up by strtok_r, *SAVE left for reading the fields after it. */
char *pgd_mountinfo_point (char *line, char **save);

/* True when PATH is a mount point according to /proc/self/mountinfo. */
bool pgd_is_mountpoint (const char *path);

/* The source (device) of the mount at PATH, e.g. "/dev/loop3", into BUF. */
int pgd_mount_source (const char *path, char *buf, size_t len, struct pgd_err *err) PGD_WUR;

#endif
