/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The image server: one process per mounted image (user engine) that serves the
   delta chain as one file through FUSE. Its entry point is the only thing it shows;
   the engine starts it (engine.c) and the two binaries call it. */
#ifndef PGD_IMGSRV_H
#define PGD_IMGSRV_H

/* Run the image server with ARGV ("serve-image" sub-mode arguments); returns the exit
   status once the FUSE session ends. */
int pgd_imgsrv_main (int argc, char **argv);

#endif
