/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The chain as a DiskDescriptor.xml names it, read through libploop: kept apart from
   chain.c so that the image server binary, which is handed the delta files, links
   neither libploop nor libxml2 (a faster start for every mount). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <ploop/libploop.h>

#include "chain.h"
#include "delta.h"
#include "image.h"
#include "util.h"

/* Exported by libploop 1.15 but not declared (PLOOP.md §5.1). */
char **make_images_list (struct ploop_disk_images_data *di, const char *guid, int reverse);

void
pgd_chain_free_list (char **files)
{
  if (files == NULL)
    return;
  for (char **p = files; *p; p++)
    free (*p);
  free (files);
}

int
pgd_chain_list (const char *dd_path, char ***files, bool *raw_base, struct pgd_err *err)
{
  /* libploop 1.15 copies about PATH_MAX bytes from the path (PLOOP.md §5.4 pitfall 1) */
  cleanup_free char *dd = calloc (1, 2 * PATH_MAX);
  struct ploop_disk_images_data *di = NULL;
  char **list = NULL, **out = NULL;
  size_t n = 0;
  int rc;

  if (dd == NULL)
    return pgd_error (err, ENOMEM, "read %s", dd_path);
  if (strlen (dd_path) >= PATH_MAX)
    return pgd_error (err, ENAMETOOLONG, "read %s", dd_path);
  strcpy (dd, dd_path);
  pgd_image_lib_init ();
  rc = ploop_read_disk_descr (&di, dd);
  if (rc != 0)
    return pgd_error (err, EINVAL, "read %s: %s (rc %d)", dd_path, ploop_get_last_error (), rc);
  if (di->nimages < 1 || di->top_guid == NULL)
    {
      ploop_free_diskdescriptor (di);
      return pgd_error (err, EINVAL, "read %s: no images", dd_path);
    }
  list = make_images_list (di, di->top_guid, 0);
  if (raw_base)
    *raw_base = di->mode == PLOOP_RAW_MODE;
  ploop_free_diskdescriptor (di);
  if (list == NULL)
    return pgd_error (err, EINVAL, "read %s: cannot follow the snapshot chain", dd_path);
  while (list[n])
    n++;
  if (n == 0 || n > PGD_CHAIN_MAX_LEVELS)
    {
      ploop_free_array (list);
      return pgd_error (err, EINVAL, "read %s: chain of %zu deltas", dd_path, n);
    }
  out = calloc (n + 1, sizeof *out);
  for (size_t i = 0; out && i < n; i++)
    if ((out[i] = strdup (list[i])) == NULL)
      {
        pgd_chain_free_list (out);
        out = NULL;
      }
  ploop_free_array (list);
  if (out == NULL)
    return pgd_error (err, ENOMEM, "read %s", dd_path);
  *files = out;
  return 0;
}

int
pgd_chain_top_in_use (const char *dd_path, bool *in_use, struct pgd_err *err)
{
  char **files = NULL;
  struct pgd_delta_hdr h;
  size_t n = 0;
  int rc;

  if (pgd_chain_list (dd_path, &files, NULL, err) < 0)
    return -1;
  while (files[n])
    n++;
  rc = pgd_delta_read_header (files[n - 1], &h, err);
  pgd_chain_free_list (files);
  if (rc < 0)
    return -1;
  *in_use = h.in_use != 0;
  return 0;
}

int
pgd_chain_open (struct pgd_chain **out, const char *dd_path, unsigned flags, struct pgd_err *err)
{
  char **files = NULL;
  bool raw_base = false;

  if (pgd_chain_list (dd_path, &files, &raw_base, err) < 0)
    return pgd_error_wrap (err, "open image %s", dd_path);
  int rc = pgd_chain_open_files (out, dd_path, files, raw_base, flags, err);
  pgd_chain_free_list (files);
  return rc;
}
