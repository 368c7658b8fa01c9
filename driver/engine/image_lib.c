/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libploop glue for the image module (quiet console, path buffers it may over-read,
   its messages carried into ours) and an image's DiskDescriptor.xml read as a chain
   of deltas from base to top. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image_priv.h"
#include "log.h"

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void
lib_init_once (void)
{
  /* libploop prints progress on stdout and every message of level "error" on stderr,
     bare ("Error in ploop_check (check.c:581): ..."), also for states it then repairs.
     Nothing on the console: a failure's message comes back through
     ploop_get_last_error into our error, which names the object (libploop_error), and
     what a successful call reported is logged with its context (libploop_note). */
  ploop_set_verbose_level (PLOOP_LOG_NOCONSOLE);
}

void
pgd_image_lib_init (void)
{
  pthread_once (&lib_once, lib_init_once);
}

/* Format a path into BUF (LPATH bytes, zero-filled first, so libploop may read
   PATH_MAX bytes past its start). */
int __attribute__ ((format (printf, 3, 4)))
pgd_lpath (char *buf, struct pgd_err *err, const char *fmt, ...)
{
  va_list ap;
  int n;

  memset (buf, 0, LPATH);
  va_start (ap, fmt);
  n = vsnprintf (buf, LPATH, fmt, ap);
  va_end (ap);
  if (n < 0 || n >= PATH_MAX)
    {
      int e = pgd_error (err, ENAMETOOLONG, "path %.80s...", buf);
      memset (buf, 0, LPATH);
      return e;
    }
  return 0;
}

int
pgd_libploop_error (struct pgd_err *err, int rc, const char *what, const char *obj)
{
  const char *msg = ploop_get_last_error ();

  return pgd_error (err, 0, "%s %s: libploop rc %d: %s", what, obj, rc,
                    msg && *msg ? msg : "(no message)");
}

/* libploop's last message, copied into BUF (before a call, for libploop_note). */
void
pgd_libploop_last (char *buf, size_t cap)
{
  const char *msg = ploop_get_last_error ();

  snprintf (buf, cap, "%s", msg ? msg : "");
}

/* A call that succeeded may still have reported what it found and fixed: log a new
   message (not BEFORE) at LEVEL with WHAT and OBJ, never bare. */
void
pgd_libploop_note (enum pgd_log_level level, const char *before, const char *what, const char *obj)
{
  const char *msg = ploop_get_last_error ();

  if (msg && *msg && strcmp (msg, before) != 0)
    pgd_log (level, "%s %s: libploop reported (and fixed): %s", what, obj, msg);
}

void
pgd_dd_chain_free (struct pgd_dd_chain *c)
{
  for (unsigned i = 0; i < c->n; i++)
    free (c->files[i]);
  c->n = 0;
  if (c->di)
    ploop_free_diskdescriptor (c->di);
  c->di = NULL;
}

static const char *
image_file (const struct ploop_disk_images_data *di, const char *guid)
{
  for (int i = 0; i < di->nimages; i++)
    if (di->images[i]->guid && strcmp (di->images[i]->guid, guid) == 0)
      return di->images[i]->file;
  return NULL;
}

static const char *
parent_guid (const struct ploop_disk_images_data *di, const char *guid)
{
  for (int i = 0; i < di->nsnapshots; i++)
    if (di->snapshots[i]->guid && strcmp (di->snapshots[i]->guid, guid) == 0)
      return di->snapshots[i]->parent_guid;
  return NULL;
}

/* Walk from <TopGUID> down to the base (<Image> order is creation order). */
static int
chain_walk (struct pgd_dd_chain *c, const char *dd, struct pgd_err *err)
{
  const char *levels[MAX_DELTAS];
  const char *guid = c->di->top_guid;
  unsigned n = 0;

  if (guid == NULL)
    return pgd_error (err, 0, "%s: no <TopGUID>", dd);
  while (strcmp (guid, NONE_UUID) != 0)
    {
      if (n == MAX_DELTAS)
        return pgd_error (err, 0, "%s: chain longer than %d deltas (or a loop)", dd, MAX_DELTAS);
      const char *file = image_file (c->di, guid);
      const char *parent = parent_guid (c->di, guid);
      if (file == NULL || parent == NULL)
        return pgd_error (err, 0, "%s: snapshot %s has no %s", dd, guid,
                          file ? "<Shot>" : "<Image>");
      levels[n++] = file;
      guid = parent;
    }
  if (n == 0)
    return pgd_error (err, 0, "%s: empty chain", dd);
  for (unsigned i = 0; i < n; i++)
    {
      c->files[i] = strdup (levels[n - 1 - i]);
      if (c->files[i] == NULL)
        return pgd_error (err, ENOMEM, "%s", dd);
      c->n = i + 1;
    }
  return 0;
}

/* Parse DIR/DiskDescriptor.xml into C. ploop_read_disk_descr takes no lock
   (checked with strace), so this works while the image is served. */
int
pgd_dd_chain_read (const char *dir, struct pgd_dd_chain *c, struct pgd_err *err)
{
  char dd[LPATH];
  struct stat st;
  int rc;

  memset (c, 0, sizeof *c);
  if (stat (dir, &st) < 0)
    return pgd_error (err, errno, "image directory %s", dir);
  if (!S_ISDIR (st.st_mode))
    return pgd_error (err, ENOTDIR, "image directory %s", dir);
  if (pgd_lpath (dd, err, "%s/%s", dir, PGD_IMAGE_DD) < 0)
    return -1;
  if (access (dd, R_OK) < 0)
    return pgd_error (err, errno, "%s", dd);
  pgd_image_lib_init ();
  rc = ploop_read_disk_descr (&c->di, dd);
  if (rc != 0)
    return pgd_libploop_error (err, rc, "read", dd);
  c->raw_base = c->di->mode == PLOOP_RAW_MODE;
  c->blocksize = c->di->blocksize;
  return chain_walk (c, dd, err);
}

bool
pgd_dd_top_is_raw (const struct pgd_dd_chain *c)
{
  return c->raw_base && c->n == 1;
}
