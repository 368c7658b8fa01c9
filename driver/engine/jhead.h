/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The ext4 journal's recorded head (private to the engine).

   Since Linux 6.5 jbd2 records, at a clean unmount, where its log stopped (s_head in the
   journal superblock) and the next mount logs on from there. In a stack of ploop layers
   every layer would then log a little further into the journal, away from the journal
   superblock: one more 64 KiB cluster copied up per layer that writes anything. Without
   a recorded head (0, as mke2fs writes it) a mount logs from the journal's first block,
   next to its superblock. */
#ifndef PGD_JHEAD_H
#define PGD_JHEAD_H

#include <stdbool.h>

#include "err.h"

/* On the disk file DISK holding a cleanly unmounted ext4 (not mounted anywhere): when
   its journal is empty and records a head, write the journal superblock back with no
   head (checksum updated) and fsync it. *REWOUND: it wrote. Anything it does not
   recognise as such an ext4 (no journal, an external one, a journal that needs
   recovery, an unknown checksum, a read-only DISK) is left alone and is not an error;
   an I/O error is. */
int pgd_jhead_rewind (const char *disk, bool *rewound, struct pgd_err *err)
    __attribute__ ((warn_unused_result));

#endif
