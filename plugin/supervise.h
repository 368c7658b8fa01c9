/* SPDX-License-Identifier: GPL-2.0-or-later */
/* --supervise: a minimal parent (PID 1 of the managed plugin's container) that runs the
   plugin as its child, restarts it when it dies, reaps and forwards stop signals. */
#ifndef PGD_SUPERVISE_H
#define PGD_SUPERVISE_H

/* Run ARGV (this binary's command line) without its --supervise as a child, again after
   each death, until SIGTERM or SIGINT, which go to the child; the exit status is the
   child's last. Image servers orphaned by a dead child are reaped here and keep
   serving: the restarted child adopts their mounts. */
int pgd_supervise (int argc, char **argv);

#endif
