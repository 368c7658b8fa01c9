/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The small list types of driver.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"

int
pgd_kvlist_add (struct pgd_kvlist *list, const char *key, const char *value, struct pgd_err *err)
{
  struct pgd_kv *n = realloc (list->items, (list->n + 1) * sizeof *n);
  if (n == NULL)
    return pgd_error (err, ENOMEM, "add %s", key);
  list->items = n;
  n[list->n].key = strdup (key);
  n[list->n].value = strdup (value);
  if (n[list->n].key == NULL || n[list->n].value == NULL)
    {
      free (n[list->n].key);
      free (n[list->n].value);
      return pgd_error (err, ENOMEM, "add %s", key);
    }
  list->n++;
  return 0;
}

void
pgd_kvlist_free (struct pgd_kvlist *list)
{
  for (size_t i = 0; i < list->n; i++)
    {
      free (list->items[i].key);
      free (list->items[i].value);
    }
  free (list->items);
  list->items = NULL;
  list->n = 0;
}

int
pgd_changes_add (struct pgd_changes *list, const char *path, enum pgd_change_kind kind,
                 struct pgd_err *err)
{
  if (list->n == list->cap)
    {
      size_t cap = list->cap ? list->cap * 2 : 64;
      struct pgd_change *n = realloc (list->items, cap * sizeof *n);
      if (n == NULL)
        return pgd_error (err, ENOMEM, "change %s", path);
      list->items = n;
      list->cap = cap;
    }
  list->items[list->n].path = strdup (path);
  if (list->items[list->n].path == NULL)
    return pgd_error (err, ENOMEM, "change %s", path);
  list->items[list->n].kind = kind;
  list->n++;
  return 0;
}

void
pgd_changes_free (struct pgd_changes *list)
{
  for (size_t i = 0; i < list->n; i++)
    free (list->items[i].path);
  free (list->items);
  list->items = NULL;
  list->n = list->cap = 0;
}

int64_t
pgd_idmap_to_host (const struct pgd_idmap *map, size_t n, uint32_t id)
{
  if (n == 0)
    return id;
  for (size_t i = 0; i < n; i++)
    if (id >= map[i].container_id && id - map[i].container_id < map[i].size)
      return (int64_t)map[i].host_id + (id - map[i].container_id);
  return -1;
}

int64_t
pgd_idmap_to_container (const struct pgd_idmap *map, size_t n, uint32_t id)
{
  if (n == 0)
    return id;
  for (size_t i = 0; i < n; i++)
    if (id >= map[i].host_id && id - map[i].host_id < map[i].size)
      return (int64_t)map[i].container_id + (id - map[i].host_id);
  return -1;
}
