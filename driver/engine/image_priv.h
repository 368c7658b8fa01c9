/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Internals of the image module shared by image.c and image_dd.c. Not for other modules. */
#ifndef PGD_IMAGE_PRIV_H
#define PGD_IMAGE_PRIV_H

#include <ploop/libploop.h>

#include "err.h"

/* Record FILE as the new top of the in-memory DD DI under TOPDELTA_UUID, the old top
   renamed to a fresh GUID, as ploop_create_snapshot does; DI stays the caller's to
   store and to free (also on error). */
int pgd_image_di_push_top (struct ploop_disk_images_data *di, const char *file, struct pgd_err *err)
    __attribute__ ((warn_unused_result, nonnull));

#endif
