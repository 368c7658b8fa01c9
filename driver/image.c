/* SPDX-License-Identifier: GPL-2.0-or-later */
/* PLACEHOLDER until the image module lands: every call fails. */
#include <errno.h>
#include "image.h"
int pgd_image_create (const char *d, uint64_t s, uint32_t c, struct pgd_err *err)
{ (void) d; (void) s; (void) c; return pgd_error (err, ENOSYS, "image create"); }
int pgd_image_clone (const char *p, const char *c, struct pgd_err *err)
{ (void) p; (void) c; return pgd_error (err, ENOSYS, "image clone"); }
int pgd_image_grow (const char *d, uint64_t s, struct pgd_err *err)
{ (void) d; (void) s; return pgd_error (err, ENOSYS, "image grow"); }
int pgd_image_check (const char *d, bool r, struct pgd_err *err)
{ (void) d; (void) r; return pgd_error (err, ENOSYS, "image check"); }
int pgd_image_info (const char *d, struct pgd_image_info *i, struct pgd_err *err)
{ (void) d; (void) i; return pgd_error (err, ENOSYS, "image info"); }
