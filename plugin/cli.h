/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Image sub-commands for people (create, clone, grow, check, info, mount, umount). */
#ifndef PGD_CLI_H
#define PGD_CLI_H

#include <stdbool.h>

/* True when NAME is one of the image sub-commands. */
bool pgd_cli_is_command (const char *name);

/* Run the sub-command ARGV[0] with its options and arguments; returns the process exit
   status (0 done, 1 failed with a message on stderr, 2 usage error). */
int pgd_cli_main (int argc, char **argv);

#endif
