/* SPDX-License-Identifier: GPL-2.0-or-later */
/* PLACEHOLDER until the engine lands: every call fails. */
#include <errno.h>
#include <stdio.h>
#include "engine.h"
int pgd_engine_setup (struct pgd_engine *e, const char *name, const char *exe, struct pgd_err *err)
{ (void) e; (void) name; (void) exe; return pgd_error (err, ENOSYS, "engine"); }
int pgd_engine_mount (const struct pgd_engine *e, const char *i, const char *r, const char *t,
                      unsigned f, const char *o, struct pgd_err *err)
{ (void) e; (void) i; (void) r; (void) t; (void) f; (void) o; return pgd_error (err, ENOSYS, "mount"); }
int pgd_engine_umount (const struct pgd_engine *e, const char *i, const char *r, const char *t,
                       struct pgd_err *err)
{ (void) e; (void) i; (void) r; (void) t; return pgd_error (err, ENOSYS, "umount"); }
int pgd_imgsrv_main (int argc, char **argv) { (void) argc; (void) argv; fprintf (stderr, "not implemented\n"); return 1; }
