/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The snapshot registry (meta.h): a flat array searched linearly (containerd keeps a
   few thousand snapshots at most), saved whole as
   {"version":1,"snapshots":[{"key","id","kind","parent","labels","created","updated","inodes"}]}.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "meta.h"
#include "util.h"

#define META_VERSION 1

struct pgd_snaps
{
  pthread_mutex_t lock;
  char path[4096];
  struct pgd_snap **items;
  size_t n;
  size_t cap;
};

int64_t
pgd_snap_now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

const char *
pgd_snap_kind_name (enum pgd_snap_kind kind)
{
  switch (kind)
    {
    case PGD_SNAP_VIEW:
      return "view";
    case PGD_SNAP_ACTIVE:
      return "active";
    case PGD_SNAP_COMMITTED:
      return "committed";
    }
  return "unknown";
}

static int
kind_of_name (const char *name)
{
  for (int k = PGD_SNAP_VIEW; k <= PGD_SNAP_COMMITTED; k++)
    if (strcmp (name, pgd_snap_kind_name ((enum pgd_snap_kind)k)) == 0)
      return k;
  return -1;
}

static void
free_rec (struct pgd_snap *r)
{
  if (r == NULL)
    return;
  free (r->key);
  free (r->parent);
  json_decref (r->labels);
  free (r);
}

static int
append (struct pgd_snaps *s, struct pgd_snap *r, struct pgd_err *err)
{
  if (s->n == s->cap)
    {
      size_t cap = s->cap ? s->cap * 2 : 64;
      struct pgd_snap **items = realloc (s->items, cap * sizeof *items);
      if (items == NULL)
        return pgd_error (err, ENOMEM, "snapshot table");
      s->items = items;
      s->cap = cap;
    }
  s->items[s->n++] = r;
  return 0;
}

static bool
id_valid (const char *id)
{
  if (strlen (id) != PGD_SNAP_ID_LEN)
    return false;
  for (const char *p = id; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
      return false;
  return true;
}

/* One record from the file; NULL (ERR set) when it does not hold together. */
static struct pgd_snap *
rec_from_json (json_t *o, size_t i, struct pgd_err *err)
{
  const char *key = NULL, *id = NULL, *kind = NULL, *parent = NULL;
  json_t *labels = NULL;
  json_int_t created = 0, updated = 0, inodes = 0;
  json_error_t jerr;

  if (json_unpack_ex (o, &jerr, 0, "{s:s,s:s,s:s,s?s,s:o,s:I,s:I,s?I}", "key", &key, "id", &id,
                      "kind", &kind, "parent", &parent, "labels", &labels, "created", &created,
                      "updated", &updated, "inodes", &inodes)
      < 0)
    {
      pgd_error (err, EINVAL, "snapshot %zu: %s", i, jerr.text);
      return NULL;
    }
  int k = kind_of_name (kind);
  if (k < 0 || !id_valid (id) || !json_is_object (labels))
    {
      pgd_error (err, EINVAL, "snapshot %zu: bad kind, id or labels", i);
      return NULL;
    }
  struct pgd_snap *r = calloc (1, sizeof *r);
  if (r == NULL || (r->key = strdup (key)) == NULL
      || (parent && (r->parent = strdup (parent)) == NULL))
    {
      free_rec (r);
      pgd_error (err, ENOMEM, "snapshot %zu", i);
      return NULL;
    }
  memcpy (r->id, id, PGD_SNAP_ID_LEN + 1);
  r->kind = (enum pgd_snap_kind)k;
  r->labels = json_incref (labels);
  r->created_ns = created;
  r->updated_ns = updated;
  r->inodes = inodes;
  return r;
}

static int
load (struct pgd_snaps *s, struct pgd_err *err)
{
  cleanup_free char *text = NULL;
  json_error_t jerr;
  size_t len, i;
  json_t *v;

  if (pgd_read_file (s->path, &text, &len, err) < 0)
    return err->errnum == ENOENT ? 0 : -1;
  json_t *root = json_loadb (text, len, 0, &jerr);
  if (root == NULL)
    return pgd_error (err, EINVAL, "%s: line %d: %s", s->path, jerr.line, jerr.text);
  json_t *list = json_object_get (root, "snapshots");
  int ret = 0;
  if (json_integer_value (json_object_get (root, "version")) != META_VERSION
      || !json_is_array (list))
    ret = pgd_error (err, EINVAL, "%s: not version %d snapshot metadata", s->path, META_VERSION);
  json_array_foreach (list, i, v)
  {
    if (ret < 0)
      break;
    struct pgd_snap *r = rec_from_json (v, i, err);
    if (r == NULL || append (s, r, err) < 0)
      {
        free_rec (r);
        ret = pgd_error_wrap (err, "%s", s->path);
      }
  }
  json_decref (root);
  return ret;
}

int
pgd_snaps_open (struct pgd_snaps **out, const char *path, struct pgd_err *err)
{
  struct pgd_snaps *s = calloc (1, sizeof *s);

  if (s == NULL)
    return pgd_error (err, ENOMEM, "snapshot metadata");
  pthread_mutex_init (&s->lock, NULL);
  snprintf (s->path, sizeof s->path, "%s", path);
  if (load (s, err) < 0)
    {
      pgd_snaps_close (s);
      return -1;
    }
  *out = s;
  return 0;
}

void
pgd_snaps_close (struct pgd_snaps *s)
{
  if (s == NULL)
    return;
  for (size_t i = 0; i < s->n; i++)
    free_rec (s->items[i]);
  free (s->items);
  pthread_mutex_destroy (&s->lock);
  free (s);
}

pthread_mutex_t *
pgd_snaps_mutex (struct pgd_snaps *s)
{
  return &s->lock;
}

struct pgd_snap *
pgd_snaps_find (struct pgd_snaps *s, const char *key)
{
  for (size_t i = 0; i < s->n; i++)
    if (strcmp (s->items[i]->key, key) == 0)
      return s->items[i];
  return NULL;
}

struct pgd_snap *
pgd_snaps_add (struct pgd_snaps *s, const char *key, enum pgd_snap_kind kind, const char *parent,
               struct pgd_err *err)
{
  unsigned char rnd[PGD_SNAP_ID_LEN / 2];
  struct pgd_snap *r = calloc (1, sizeof *r);

  if (r == NULL || (r->key = strdup (key)) == NULL
      || (parent && (r->parent = strdup (parent)) == NULL) || (r->labels = json_object ()) == NULL)
    {
      free_rec (r);
      pgd_error (err, ENOMEM, "snapshot %s", key);
      return NULL;
    }
  if (getrandom (rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
    {
      free_rec (r);
      pgd_error (err, errno, "snapshot %s: random layer ID", key);
      return NULL;
    }
  for (size_t i = 0; i < sizeof rnd; i++)
    snprintf (r->id + 2 * i, 3, "%02x", rnd[i]);
  r->kind = kind;
  r->creating = true;
  r->created_ns = r->updated_ns = pgd_snap_now_ns ();
  if (append (s, r, err) < 0)
    {
      free_rec (r);
      return NULL;
    }
  return r;
}

void
pgd_snaps_drop (struct pgd_snaps *s, struct pgd_snap *rec)
{
  for (size_t i = 0; i < s->n; i++)
    if (s->items[i] == rec)
      {
        memmove (&s->items[i], &s->items[i + 1], (s->n - i - 1) * sizeof *s->items);
        s->n--;
        free_rec (rec);
        return;
      }
}

size_t
pgd_snaps_children (struct pgd_snaps *s, const char *key)
{
  size_t n = 0;
  for (size_t i = 0; i < s->n; i++)
    if (s->items[i]->parent && strcmp (s->items[i]->parent, key) == 0)
      n++;
  return n;
}

size_t
pgd_snaps_count (struct pgd_snaps *s)
{
  return s->n;
}

struct pgd_snap *
pgd_snaps_at (struct pgd_snaps *s, size_t i)
{
  return i < s->n ? s->items[i] : NULL;
}

int
pgd_snaps_save (struct pgd_snaps *s, struct pgd_err *err)
{
  json_t *list = json_array ();
  json_t *root = json_pack ("{s:i,s:o}", "version", META_VERSION, "snapshots", list);

  if (root == NULL)
    return pgd_error (err, ENOMEM, "save %s", s->path);
  for (size_t i = 0; i < s->n; i++)
    {
      const struct pgd_snap *r = s->items[i];
      if (r->creating)
        continue;
      json_t *o = json_pack ("{s:s,s:s,s:s,s:O,s:I,s:I,s:I}", "key", r->key, "id", r->id, "kind",
                             pgd_snap_kind_name (r->kind), "labels", r->labels, "created",
                             (json_int_t)r->created_ns, "updated", (json_int_t)r->updated_ns,
                             "inodes", (json_int_t)r->inodes);
      if (o && r->parent)
        json_object_set_new (o, "parent", json_string (r->parent));
      if (o == NULL || json_array_append_new (list, o) < 0)
        {
          json_decref (root);
          return pgd_error (err, ENOMEM, "save %s", s->path);
        }
    }
  cleanup_free char *text = json_dumps (root, JSON_COMPACT);
  json_decref (root);
  if (text == NULL)
    return pgd_error (err, ENOMEM, "save %s", s->path);
  if (pgd_write_file_atomic (s->path, text, strlen (text), err) < 0)
    return pgd_error_wrap (err, "save snapshot metadata");
  return 0;
}
