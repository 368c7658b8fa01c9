/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Edits of a DiskDescriptor.xml held in memory (libploop's struct, freed by
   ploop_free_diskdescriptor), for what libploop 1.15 only does together with writing a
   whole delta: recording a new top as its offline snapshot does (PLOOP.md §3). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "image_priv.h"

#define TOPDELTA_GUID                                                                              \
  "{5fbaabe3-6958-40ff-92a7-860e329aab41}" /* the writable top (PLOOP.md §3)                      \
                                            */

/* Append a pointer to the malloc'd array *ARR of *N pointers (libploop frees it). */
static int
append_ptr (void ***arr, int *n, void *p)
{
  void **grown = realloc (*arr, (size_t)(*n + 1) * sizeof *grown);
  if (grown == NULL)
    return -1;
  grown[(*n)++] = p;
  *arr = grown;
  return 0;
}

/* In DI, rename snapshot GUID OLD to NEW wherever it appears. */
static int
rename_guid (struct ploop_disk_images_data *di, const char *old, const char *new)
{
  char **slots[3];

  for (int i = 0; i < di->nimages + di->nsnapshots; i++)
    {
      int n = 0;
      if (i < di->nimages)
        slots[n++] = &di->images[i]->guid;
      else
        {
          slots[n++] = &di->snapshots[i - di->nimages]->guid;
          slots[n++] = &di->snapshots[i - di->nimages]->parent_guid;
        }
      for (int k = 0; k < n; k++)
        if (*slots[k] && strcmp (*slots[k], old) == 0)
          {
            char *copy = strdup (new);
            if (copy == NULL)
              return -1;
            free (*slots[k]);
            *slots[k] = copy;
          }
    }
  return 0;
}

/* Record FILE as the new top of DI under TOPDELTA_GUID, the old top renamed to a fresh
   GUID, as ploop_create_snapshot does (PLOOP.md §3). */
int
pgd_image_di_push_top (struct ploop_disk_images_data *di, const char *file, struct pgd_err *err)
{
  char guid[GUID_LEN];
  struct ploop_image_data *img = calloc (1, sizeof *img);
  struct ploop_snapshot_data *snap = calloc (1, sizeof *snap);

  if (img == NULL || snap == NULL || ploop_uuid_generate (guid, sizeof guid) != 0)
    goto fail;
  if (strcmp (di->top_guid, TOPDELTA_GUID) == 0 && rename_guid (di, TOPDELTA_GUID, guid) < 0)
    goto fail;
  img->guid = strdup (TOPDELTA_GUID);
  img->file = strdup (file);
  snap->guid = strdup (TOPDELTA_GUID);
  snap->parent_guid = strdup (strcmp (di->top_guid, TOPDELTA_GUID) == 0 ? guid : di->top_guid);
  if (!img->guid || !img->file || !snap->guid || !snap->parent_guid)
    goto fail;
  char *top = strdup (TOPDELTA_GUID);
  if (top == NULL || append_ptr ((void ***)&di->images, &di->nimages, img) < 0)
    {
      free (top);
      goto fail;
    }
  img = NULL;
  if (append_ptr ((void ***)&di->snapshots, &di->nsnapshots, snap) < 0)
    {
      free (top);
      goto fail; /* DI is freed by the caller on error; the dangling image is harmless */
    }
  free (di->top_guid);
  di->top_guid = top;
  return 0;

fail:
  if (img)
    {
      free (img->guid);
      free (img->file);
      free (img);
    }
  if (snap)
    {
      free (snap->guid);
      free (snap->parent_guid);
      free (snap);
    }
  return pgd_error (err, ENOMEM, "new top delta %s", file);
}
