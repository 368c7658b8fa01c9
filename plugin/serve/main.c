/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ploop-graphdriver-serve-image: the image server alone (driver/imgsrv.c), linked with
   libfuse3 and libc only. The engine starts it for every mount when it sits beside the
   plugin binary: it starts in well under a millisecond of dynamic linking where the
   plugin binary, with its 27 libraries, takes about 4 ms. Same arguments as
   `ploop-graphdriver serve-image`. */
#include "engine/imgsrv.h"

int
main (int argc, char **argv)
{
  return pgd_imgsrv_main (argc, argv);
}
