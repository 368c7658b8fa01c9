/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Leak probes for the tests: what a process or a directory still holds (open fds,
   loop devices backed below a directory, mounts below it, processes whose command
   line names it, entries of a directory). They only look; cleanup is pc_stop's. */
#ifndef PGD_LEAKS_H
#define PGD_LEAKS_H

#include <stddef.h>
#include <sys/types.h>

/* The number of open fds of PID (entries of /proc/PID/fd), or -1. */
int lk_fd_count (pid_t pid);

/* "fd -> target" lines for every open fd of PID into OUT (CAP bytes), for messages. */
void lk_fd_list (pid_t pid, char *out, size_t cap);

/* Loop devices whose backing file lies below DIR: their count, names into OUT
   (space-separated, CAP bytes; OUT may be NULL). */
int lk_loops_under (const char *dir, char *out, size_t cap);

/* Mount points strictly below DIR (from /proc/self/mountinfo): count, names into OUT. */
int lk_mounts_under (const char *dir, char *out, size_t cap);

/* Processes other than EXCEPT whose command line contains every one of the
   NULL-terminated strings (e.g. "serve-image", a directory): count, "pid cmdline"
   lines into OUT. */
int lk_procs_matching (pid_t except, char *out, size_t cap, const char *const *needles);

/* Entries of DIR other than "." and ".." that start with PREFIX ("" for all): count,
   names into OUT; -1 when DIR cannot be read (a missing DIR counts as empty). */
int lk_dir_entries (const char *dir, const char *prefix, char *out, size_t cap);

#endif
