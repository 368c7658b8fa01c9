/* SPDX-License-Identifier: GPL-2.0-or-later */
/* PLACEHOLDER until the diff engine lands: every call fails. */
#include <errno.h>
#include "diff.h"
int pgd_diff_apply (const char *r, int fd, const struct pgd_idmaps *m, int64_t *s, struct pgd_err *err)
{ (void) r; (void) fd; (void) m; (void) s; return pgd_error (err, ENOSYS, "apply"); }
int pgd_diff_changes (const char *n, const char *o, struct pgd_changes *c, struct pgd_err *err)
{ (void) n; (void) o; (void) c; return pgd_error (err, ENOSYS, "changes"); }
int pgd_diff_write (const char *n, const char *o, int fd, const struct pgd_idmaps *m, struct pgd_err *err)
{ (void) n; (void) o; (void) fd; (void) m; return pgd_error (err, ENOSYS, "diff"); }
int pgd_diff_size (const char *n, const char *o, int64_t *s, struct pgd_err *err)
{ (void) n; (void) o; (void) s; return pgd_error (err, ENOSYS, "diff size"); }
