/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Open addressing with linear probing; the table doubles at 70% load. */
#include "keymap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct pgd_keymap_node
{
  uint64_t hash;
  char *value;
  size_t len;
  unsigned char key[];
};

/* FNV-1a, 64 bits. */
static uint64_t
hash_bytes (const void *key, size_t len)
{
  const unsigned char *p = key;
  uint64_t h = 14695981039346656037ULL;

  for (size_t i = 0; i < len; i++)
    {
      h ^= p[i];
      h *= 1099511628211ULL;
    }
  return h;
}

static size_t
find_slot (struct pgd_keymap_node **slots, size_t cap, uint64_t hash, const void *key, size_t len)
{
  size_t i = hash & (cap - 1);

  while (slots[i] != NULL)
    {
      const struct pgd_keymap_node *nd = slots[i];
      if (nd->hash == hash && nd->len == len && memcmp (nd->key, key, len) == 0)
        return i;
      i = (i + 1) & (cap - 1);
    }
  return i;
}

static int
grow (struct pgd_keymap *m, struct pgd_err *err)
{
  size_t cap = m->cap ? m->cap * 2 : 64;
  struct pgd_keymap_node **slots = calloc (cap, sizeof *slots);

  if (slots == NULL)
    return pgd_error (err, ENOMEM, "grow map to %zu slots", cap);
  for (size_t i = 0; i < m->cap; i++)
    if (m->slots[i] != NULL)
      {
        struct pgd_keymap_node *nd = m->slots[i];
        slots[find_slot (slots, cap, nd->hash, nd->key, nd->len)] = nd;
      }
  free (m->slots);
  m->slots = slots;
  m->cap = cap;
  return 0;
}

int
pgd_keymap_put (struct pgd_keymap *m, const void *key, size_t len, const char *value, bool *added,
                struct pgd_err *err)
{
  uint64_t hash = hash_bytes (key, len);
  struct pgd_keymap_node *nd;
  size_t i;

  if (added)
    *added = false;
  if ((m->n + 1) * 10 > m->cap * 7 && grow (m, err) < 0)
    return -1;
  i = find_slot (m->slots, m->cap, hash, key, len);
  if (m->slots[i] != NULL)
    return 0;
  nd = malloc (sizeof *nd + len);
  if (nd == NULL)
    return pgd_error (err, ENOMEM, "map insert");
  nd->hash = hash;
  nd->len = len;
  memcpy (nd->key, key, len);
  nd->value = NULL;
  if (value != NULL && (nd->value = strdup (value)) == NULL)
    {
      free (nd);
      return pgd_error (err, ENOMEM, "map insert");
    }
  m->slots[i] = nd;
  m->n++;
  if (added)
    *added = true;
  return 0;
}

bool
pgd_keymap_get (const struct pgd_keymap *m, const void *key, size_t len, const char **value)
{
  size_t i;

  if (m->cap == 0)
    return false;
  i = find_slot (m->slots, m->cap, hash_bytes (key, len), key, len);
  if (m->slots[i] == NULL)
    return false;
  if (value)
    *value = m->slots[i]->value;
  return true;
}

void
pgd_keymap_free (struct pgd_keymap *m)
{
  for (size_t i = 0; i < m->cap; i++)
    if (m->slots[i] != NULL)
      {
        free (m->slots[i]->value);
        free (m->slots[i]);
      }
  free (m->slots);
  m->slots = NULL;
  m->cap = m->n = 0;
}
