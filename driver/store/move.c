/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Init with another Home while the store serves one: the move is made only when no
   layer of the old Home is held; its idle mounts are then taken down and the layer
   table emptied, so that nothing of the old Home is later unmounted (or handed out)
   under the new Home's paths. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "log.h"
#include "util.h"

/* Names of layers held (by Get, Diff, ApplyDiff, an adopted mount), and with BUSY also
   of those another thread is working on, into OUT, comma-separated, at most CAP
   bytes; their count. Called with l->lock held. */
static unsigned
held_layers (struct pgd_layers *l, bool busy, char *out, size_t cap)
{
  unsigned n = 0;
  size_t len = 0;

  out[0] = '\0';
  for (size_t b = 0; b < PGD_BUCKETS; b++)
    for (struct layer *lay = l->table[b]; lay; lay = lay->next)
      {
        if (!(busy && lay->busy) && (lay->state != LAYER_MOUNTED || lay->refs == 0))
          continue;
        if (n++ < 8 && len < cap)
          len += (size_t)snprintf (out + len, cap - len, "%s%s", len ? ", " : "", lay->id);
      }
  if (n > 8 && len < cap)
    snprintf (out + len, cap - len, ", ...");
  return n;
}

int
pgd_store_leave_home (struct pgd_layers *l, const char *home, struct pgd_err *err)
{
  char held[512];
  unsigned n;

  PGD_SCOPED_LOCK (&l->lock);
  if (!l->ready || strcmp (l->home, home) == 0)
    return 0;
  n = held_layers (l, false, held, sizeof held);
  if (n > 0)
    return pgd_error (err, EBUSY,
                      "Init: cannot move from Home %s to %s: %u layer(s) of %s are in use (%s); "
                      "release them (Put, or stop their containers) first",
                      l->home, home, n, l->home, held);
  if (pgd_layers_unmount_idle (l, true, err) < 0)
    return pgd_error_wrap (err, "Init: leave Home %s", l->home);
  /* a Get may have come in while the lock was dropped */
  n = held_layers (l, false, held, sizeof held);
  if (n > 0)
    return pgd_error (err, EBUSY, "Init: cannot move from Home %s to %s: %s came into use", l->home,
                      home, held);
  for (size_t b = 0; b < PGD_BUCKETS; b++)
    while (l->table[b])
      pgd_layer_forget (l, l->table[b]->id);
  pgd_log (PGD_LOG_INFO, "left Home %s for %s (nothing of it mounted)", l->home, home);
  return 0;
}
