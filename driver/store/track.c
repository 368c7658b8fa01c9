/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The change tracker's records: fanotify groups and their reader thread, the record
   file (load, take off disk, write back). The hint is built in trackhint.c. */
#include "track.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/image.h"
#include "log.h"
#include "track_priv.h"

#define TRACK_MAGIC "pgd-track 1"
/* What marks a directory as changed. FAN_OPEN covers writes through a shared mmap,
   which fanotify never reports: a file opened at all marks its directory. */
#define TRACK_MASK                                                                                 \
  (FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_MODIFY | FAN_ATTRIB               \
   | FAN_CLOSE_WRITE | FAN_OPEN | FAN_ONDIR)
#define EVENT_BUF 65536

struct track_rec *
pgd_track_find (struct pgd_tracker *t, const char *id)
{
  for (struct track_rec *r = t->recs; r; r = r->next)
    if (strcmp (r->id, id) == 0)
      return r;
  return NULL;
}

static void
rec_clear (struct track_rec *r)
{
  for (size_t i = 0; i < r->n; i++)
    free (r->ents[i]);
  free (r->ents);
  r->ents = NULL;
  r->n = r->cap = 0;
  pgd_keymap_free (&r->seen);
}

static void *
close_main (void *fd)
{
  close ((int)(intptr_t)fd);
  return NULL;
}

/* Close the fanotify group FD in a thread of its own: closing a group waits for an
   SRCU grace period (10-15 ms measured), which a Create need not wait for. */
static void
close_later (int fd)
{
  pthread_attr_t attr;
  pthread_t th;

  pthread_attr_init (&attr);
  pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
  if (pthread_create (&th, &attr, close_main, (void *)(intptr_t)fd) != 0)
    close (fd);
  pthread_attr_destroy (&attr);
}

static void
rec_unwatch (struct pgd_tracker *t, struct track_rec *r)
{
  if (r->fan < 0)
    return;
  epoll_ctl (t->ep, EPOLL_CTL_DEL, r->fan, NULL);
  if (r->forked)
    close_later (r->fan);
  else
    close (r->fan);
  r->fan = -1;
}

void
pgd_track_distrust (struct pgd_tracker *t, struct track_rec *r, const char *why)
{
  if (!r->trusted)
    return;
  r->trusted = false;
  snprintf (r->why, sizeof r->why, "%s", why);
  pgd_log (PGD_LOG_DEBUG, "change record of %s dropped: %s", r->id, why);
  rec_unwatch (t, r);
  rec_clear (r);
}

/* Take R off the list; the list lock is held. Whoever locks a record does so while
   holding the list lock, so after this only a current holder of R's lock knows R. */
static void
rec_unlink (struct pgd_tracker *t, struct track_rec *r)
{
  for (struct track_rec **pp = &t->recs; *pp; pp = &(*pp)->next)
    if (*pp == r)
      {
        *pp = r->next;
        break;
      }
}

/* Free R, off the list and unlocked. */
static void
rec_destroy (struct pgd_tracker *t, struct track_rec *r)
{
  rec_unwatch (t, r);
  rec_clear (r);
  pthread_mutex_destroy (&r->lock);
  free (r);
}

/* Remove R from the list and free it once its current holder is done; the list lock
   is held. */
static void
rec_free (struct pgd_tracker *t, struct track_rec *r)
{
  rec_unlink (t, r);
  pthread_mutex_lock (&r->lock);
  pthread_mutex_unlock (&r->lock);
  rec_destroy (t, r);
}

/* Record (handle, NAME) in R (locked). */
static void
rec_add (struct pgd_tracker *t, struct track_rec *r, int32_t type, const unsigned char *h,
         size_t hlen, const char *name)
{
  size_t nlen = strlen (name) + 1;
  size_t len = sizeof (struct track_ent) + hlen + nlen;
  struct track_ent *e;
  struct pgd_err err;
  bool added;

  if (!r->trusted)
    return;
  if (hlen > 255)
    return pgd_track_distrust (t, r, "a file handle longer than 255 bytes");
  e = calloc (1, len); /* padding included: E is also the dedup key */
  if (e == NULL)
    return pgd_track_distrust (t, r, "out of memory");
  e->type = type;
  e->hlen = hlen;
  memcpy (e->data, h, hlen);
  memcpy (e->data + hlen, name, nlen);
  if (pgd_keymap_put (&r->seen, e, len, NULL, &added, &err) < 0)
    {
      free (e);
      return pgd_track_distrust (t, r, err.msg);
    }
  if (!added)
    {
      free (e);
      return;
    }
  if (r->n >= t->max)
    {
      free (e);
      char why[96];
      snprintf (why, sizeof why, "more than %zu changed directories", t->max);
      return pgd_track_distrust (t, r, why);
    }
  if (r->n == r->cap)
    {
      size_t cap = r->cap ? r->cap * 2 : 64;
      struct track_ent **v = realloc (r->ents, cap * sizeof *v);
      if (v == NULL)
        {
          free (e);
          return pgd_track_distrust (t, r, "out of memory");
        }
      r->ents = v;
      r->cap = cap;
    }
  r->ents[r->n++] = e;
}

/* One fanotify event (EV, LEN bytes, no alignment promised) into R. */
static void
rec_event (struct pgd_tracker *t, struct track_rec *r, const char *ev, size_t len)
{
  struct fanotify_event_metadata m;
  const char *p = ev + sizeof m, *end = ev + len;

  memcpy (&m, ev, sizeof m);
  if (m.mask & FAN_Q_OVERFLOW)
    return pgd_track_distrust (t, r, "the fanotify queue overflowed");
  /* opening a directory changes nothing */
  if ((m.mask & ~(uint64_t)(FAN_OPEN | FAN_ONDIR)) == 0 && (m.mask & FAN_ONDIR))
    return;
  while (p + sizeof (struct fanotify_event_info_fid) + sizeof (struct file_handle) <= end)
    {
      struct fanotify_event_info_fid f;
      struct file_handle fh;
      memcpy (&f, p, sizeof f);
      if (f.hdr.len == 0 || p + f.hdr.len > end)
        break;
      if (f.hdr.info_type == FAN_EVENT_INFO_TYPE_DFID_NAME)
        {
          const char *h = p + sizeof f + sizeof fh;
          memcpy (&fh, p + sizeof f, sizeof fh);
          const char *name = h + fh.handle_bytes;
          if (name >= end || memchr (name, '\0', end - name) == NULL)
            break;
          /* a directory's own event comes as (itself, "."); a file's marks its directory */
          if (!(m.mask & FAN_ONDIR) || strcmp (name, ".") == 0)
            name = "";
          return rec_add (t, r, fh.handle_type, (const unsigned char *)h, fh.handle_bytes, name);
        }
      p += f.hdr.len;
    }
  pgd_track_distrust (t, r, "an event without its directory");
}

void
pgd_track_drain (struct pgd_tracker *t, struct track_rec *r)
{
  cleanup_free char *buf = NULL;

  if (r->fan < 0)
    return;
  if ((buf = malloc (EVENT_BUF)) == NULL)
    return pgd_track_distrust (t, r, "out of memory");
  while (r->fan >= 0)
    {
      ssize_t n = read (r->fan, buf, EVENT_BUF);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        return;
      if (n <= 0)
        return pgd_track_distrust (t, r, "reading fanotify events failed");
      for (ssize_t off = 0; r->fan >= 0 && off + (ssize_t)FAN_EVENT_METADATA_LEN <= n;)
        {
          struct fanotify_event_metadata m;
          memcpy (&m, buf + off, sizeof m);
          if (m.event_len < FAN_EVENT_METADATA_LEN || off + (ssize_t)m.event_len > n)
            return pgd_track_distrust (t, r, "a malformed fanotify event");
          if (m.vers != FANOTIFY_METADATA_VERSION)
            return pgd_track_distrust (t, r, "unknown fanotify metadata version");
          rec_event (t, r, buf + off, m.event_len);
          off += m.event_len;
        }
    }
}

static void *
reader_main (void *opaque)
{
  struct pgd_tracker *t = opaque;
  struct epoll_event evs[16];

  for (;;)
    {
      int n = epoll_wait (t->ep, evs, 16, -1);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          pgd_log (PGD_LOG_WARN, "change tracker: epoll: %s", strerror (errno));
          return NULL;
        }
      for (int i = 0; i < n; i++)
        {
          struct track_rec *r;
          if (evs[i].data.ptr == NULL)
            return NULL;
          /* the record is locked before the list is let go: a close waits for it */
          pthread_mutex_lock (&t->lock);
          for (r = t->recs; r && r != evs[i].data.ptr; r = r->next)
            ;
          if (r)
            pthread_mutex_lock (&r->lock);
          pthread_mutex_unlock (&t->lock);
          if (r == NULL)
            continue;
          pgd_track_drain (t, r);
          pthread_mutex_unlock (&r->lock);
        }
    }
}

int
pgd_tracker_new (struct pgd_tracker **out, struct pgd_err *err)
{
  struct pgd_tracker *t = calloc (1, sizeof *t);
  const char *max = getenv ("PGD_TRACK_MAX");
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };

  if (t == NULL)
    return pgd_error (err, ENOMEM, "change tracker");
  pthread_mutex_init (&t->lock, NULL);
  t->max = max && atol (max) > 0 ? (size_t)atol (max) : PGD_TRACK_MAX_ENTRIES;
  t->ep = epoll_create1 (EPOLL_CLOEXEC);
  t->wake = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (t->ep < 0 || t->wake < 0 || epoll_ctl (t->ep, EPOLL_CTL_ADD, t->wake, &ev) < 0)
    {
      pgd_error (err, errno, "change tracker");
      pgd_tracker_free (t);
      return -1;
    }
  int e = pthread_create (&t->reader, NULL, reader_main, t);
  if (e != 0)
    {
      pgd_error (err, e, "change tracker thread");
      pgd_tracker_free (t);
      return -1;
    }
  t->running = true;
  *out = t;
  return 0;
}

void
pgd_tracker_free (struct pgd_tracker *t)
{
  if (t == NULL)
    return;
  if (t->running)
    {
      uint64_t one = 1;
      if (write (t->wake, &one, sizeof one) < 0)
        pgd_log (PGD_LOG_WARN, "change tracker: wake: %s", strerror (errno));
      pthread_join (t->reader, NULL);
    }
  while (t->recs)
    rec_free (t, t->recs);
  if (t->ep >= 0)
    close (t->ep);
  if (t->wake >= 0)
    close (t->wake);
  pthread_mutex_destroy (&t->lock);
  free (t);
}

/* The stamp of a record: the top delta as it was when the record was written. */
static int
stamp_of (const char *top, char *buf, size_t len)
{
  struct stat st;

  if (stat (top, &st) < 0)
    return -1;
  snprintf (buf, len, "stamp %ju %ju %jd.%09ld", (uintmax_t)st.st_ino, (uintmax_t)st.st_size,
            (intmax_t)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  return 0;
}

static void
record_path (char *buf, const char *image)
{
  snprintf (buf, PATH_MAX, "%s/" PGD_TRACK_FILE, image);
}

static void
hex (FILE *f, const unsigned char *p, size_t n)
{
  if (n == 0)
    fputc ('-', f);
  for (size_t i = 0; i < n; i++)
    fprintf (f, "%02x", p[i]);
}

static int
unhex (const char *s, unsigned char *out, size_t max, size_t *n)
{
  size_t len = strlen (s);

  *n = 0;
  if (strcmp (s, "-") == 0)
    return 0;
  if (len % 2 || len / 2 > max)
    return -1;
  for (size_t i = 0; i < len; i += 2)
    {
      unsigned v;
      if (sscanf (s + i, "%2x", &v) != 1)
        return -1;
      out[(*n)++] = v;
    }
  return 0;
}

/* Write R's record for the layer in IMAGE, stamped with TOP, durable as FLAGS say. */
static int
record_write (const struct track_rec *r, const char *image, const char *top, unsigned flags,
              struct pgd_err *err)
{
  char path[PATH_MAX], stamp[128];
  cleanup_free char *data = NULL;
  size_t len = 0;
  FILE *f;

  if (stamp_of (top, stamp, sizeof stamp) < 0)
    return pgd_error (err, errno, "stat %s", top);
  f = open_memstream (&data, &len);
  if (f == NULL)
    return pgd_error (err, errno, "change record of %s", image);
  fprintf (f, "%s\nparent %s\n%s\n", TRACK_MAGIC, r->parent, stamp);
  for (size_t i = 0; i < r->n; i++)
    {
      const struct track_ent *e = r->ents[i];
      const char *name = (const char *)e->data + e->hlen;
      fprintf (f, "e %" PRId32 " ", e->type);
      hex (f, e->data, e->hlen);
      fputc (' ', f);
      hex (f, (const unsigned char *)name, strlen (name));
      fputc ('\n', f);
    }
  if (fclose (f) != 0)
    return pgd_error (err, ENOMEM, "change record of %s", image);
  record_path (path, image);
  return pgd_write_file_as (path, data, len, flags, err);
}

/* Fill R from the record in IMAGE; false when absent or not valid for TOP. */
static bool
record_load (struct pgd_tracker *t, struct track_rec *r, const char *image, const char *top)
{
  char path[PATH_MAX], stamp[128];
  cleanup_free char *data = NULL;
  struct pgd_err err;
  char *save = NULL, *line;

  record_path (path, image);
  if (pgd_read_file (path, &data, NULL, &err) < 0)
    return snprintf (r->why, sizeof r->why, "no record (never cloned here, or not closed cleanly)"),
           false;
  line = strtok_r (data, "\n", &save);
  if (line == NULL || strcmp (line, TRACK_MAGIC) != 0)
    return snprintf (r->why, sizeof r->why, "record of another format"), false;
  line = strtok_r (NULL, "\n", &save);
  if (line == NULL || strncmp (line, "parent ", 7) != 0)
    return snprintf (r->why, sizeof r->why, "record without its parent"), false;
  snprintf (r->parent, sizeof r->parent, "%s", line + 7);
  line = strtok_r (NULL, "\n", &save);
  if (line == NULL || stamp_of (top, stamp, sizeof stamp) < 0 || strcmp (line, stamp) != 0)
    return snprintf (r->why, sizeof r->why, "image written since the record (mounted elsewhere)"),
           false;
  r->trusted = true;
  while ((line = strtok_r (NULL, "\n", &save)) != NULL)
    {
      char hs[600], ns[600];
      unsigned char h[256], name[300];
      size_t hl, nl;
      int32_t type;
      if (sscanf (line, "e %" SCNd32 " %599s %599s", &type, hs, ns) != 3
          || unhex (hs, h, sizeof h, &hl) < 0 || unhex (ns, name, sizeof name - 1, &nl) < 0)
        {
          pgd_track_distrust (t, r, "a damaged record");
          return false;
        }
      name[nl] = '\0';
      rec_add (t, r, type, h, hl, (const char *)name);
    }
  return r->trusted;
}

int
pgd_track_create (const char *image, const char *parent, struct pgd_err *err)
{
  struct track_rec r = { .fan = -1 };
  struct pgd_image_info info;

  snprintf (r.parent, sizeof r.parent, "%s", parent);
  if (pgd_image_info (image, &info, err) < 0)
    return -1;
  /* a lost or torn empty record only costs full comparisons: no fsync */
  return record_write (&r, image, info.top_file, PGD_WRITE_NO_FSYNC, err);
}

void
pgd_track_open (struct pgd_tracker *t, const char *id, const char *image, const char *top, bool rw)
{
  struct track_rec *r;
  char path[PATH_MAX];
  struct pgd_err err;

  if (t == NULL)
    {
      if (rw)
        pgd_track_drop (t, id, image); /* nobody watches this mount */
      return;
    }
  if ((r = calloc (1, sizeof *r)) == NULL)
    {
      if (rw)
        pgd_track_drop (t, id, image);
      return;
    }
  pthread_mutex_init (&r->lock, NULL);
  r->fan = -1;
  snprintf (r->id, sizeof r->id, "%s", id);
  /* the layer is claimed by the caller: the disk work needs no lock */
  const char *off = getenv ("PGD_TRACK");
  if (off != NULL && strcmp (off, "0") == 0)
    {
      snprintf (r->why, sizeof r->why, "tracking disabled (PGD_TRACK=0)");
      if (rw)
        pgd_track_drop (t, id, image); /* nothing may vouch for this mount's changes */
      return rec_destroy (t, r);
    }
  if (!record_load (t, r, image, top))
    pgd_log (PGD_LOG_DEBUG, "layer %s: changes not tracked: %s", id, r->why);
  else if (rw)
    {
      /* from here on the layer may change: a crash must find no record */
      record_path (path, image);
      if (unlink (path) < 0 || pgd_fsync_dir (image, &err) < 0)
        pgd_track_distrust (t, r, "could not take the record off disk");
      else
        r->taken = true;
    }
  PGD_SCOPED_LOCK (&t->lock);
  struct track_rec *old = pgd_track_find (t, id);
  if (old != NULL)
    rec_free (t, old);
  r->next = t->recs;
  t->recs = r;
}

/* Watch the filesystem mounted at DIR for R (locked). */
static void
watch_locked (struct pgd_tracker *t, struct track_rec *r, const char *dir)
{
  if (!r->trusted || !r->taken || r->fan >= 0)
    return;
  r->fan = fanotify_init (FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME | FAN_NONBLOCK | FAN_CLOEXEC,
                          O_RDONLY | O_CLOEXEC);
  if (r->fan < 0)
    return pgd_track_distrust (t, r, "fanotify_init failed (no CAP_SYS_ADMIN, or kernel < 5.9)");
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = r };
  if (fanotify_mark (r->fan, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, TRACK_MASK, AT_FDCWD, dir) < 0
      || epoll_ctl (t->ep, EPOLL_CTL_ADD, r->fan, &ev) < 0)
    return pgd_track_distrust (t, r, "fanotify_mark on the layer's filesystem failed");
}

void
pgd_track_watch (struct pgd_tracker *t, const char *id, const char *dir)
{
  if (t == NULL)
    return;
  PGD_SCOPED_LOCK (&t->lock);
  struct track_rec *r = pgd_track_find (t, id);
  if (r == NULL)
    return;
  PGD_SCOPED_LOCK (&r->lock);
  watch_locked (t, r, dir);
}

void
pgd_track_fork (struct pgd_tracker *t, const char *parent_id, const char *child_id, const char *dir)
{
  struct track_rec *c;

  if (t == NULL)
    return;
  PGD_SCOPED_LOCK (&t->lock);
  struct track_rec *r = pgd_track_find (t, parent_id);
  if (r != NULL)
    {
      PGD_SCOPED_LOCK (&r->lock);
      /* what the parent changed was queued before the freeze; what comes after it is
         the child's: the parent's group is no longer read (closed at its close) */
      pgd_track_drain (t, r);
      if (r->fan >= 0)
        {
          epoll_ctl (t->ep, EPOLL_CTL_DEL, r->fan, NULL);
          r->forked = true;
        }
    }
  /* the child's record needs only what happens from now on, whatever the parent's */
  const char *off = getenv ("PGD_TRACK");
  if ((off != NULL && strcmp (off, "0") == 0) || (c = calloc (1, sizeof *c)) == NULL)
    return;
  pthread_mutex_init (&c->lock, NULL);
  c->fan = -1;
  snprintf (c->id, sizeof c->id, "%s", child_id);
  snprintf (c->parent, sizeof c->parent, "%s", parent_id);
  /* the child starts empty at the snapshot point, off disk (it never had a record) */
  c->trusted = c->taken = true;
  struct track_rec *old = pgd_track_find (t, child_id);
  if (old != NULL)
    rec_free (t, old);
  c->next = t->recs;
  t->recs = c;
  PGD_SCOPED_LOCK (&c->lock);
  watch_locked (t, c, dir);
}

/* Does the filesystem R watches still live (mounted in another namespace too)? Its
   mark is listed in the group's fdinfo until the superblock goes away. */
static bool
fs_still_alive (const struct track_rec *r)
{
  char path[64];
  cleanup_free char *info = NULL;
  struct pgd_err err;

  snprintf (path, sizeof path, "/proc/self/fdinfo/%d", r->fan);
  if (pgd_read_file (path, &info, NULL, &err) < 0)
    return true; /* cannot tell: assume the worst */
  return strstr (info, "fanotify sdev:") != NULL;
}

void
pgd_track_close (struct pgd_tracker *t, const char *id, const char *image, bool clean)
{
  struct pgd_image_info info;
  struct pgd_err err;

  if (t == NULL)
    return;
  /* off the list first, so that the disk writes below hold up no other layer */
  pthread_mutex_lock (&t->lock);
  struct track_rec *r = pgd_track_find (t, id);
  if (r != NULL)
    {
      rec_unlink (t, r);
      pthread_mutex_lock (&r->lock);
    }
  pthread_mutex_unlock (&t->lock);
  if (r == NULL)
    return;
  if (!r->forked)
    pgd_track_drain (t, r);
  if (r->trusted && r->taken && !clean)
    pgd_track_distrust (t, r, "not unmounted cleanly");
  /* a mount left elsewhere could still write, unseen once the group is closed (after a
     fork the filesystem lives on as the child's, the parent's image is final) */
  if (r->trusted && r->taken && r->fan >= 0 && !r->forked && fs_still_alive (r))
    pgd_track_distrust (t, r, "its filesystem is still mounted elsewhere");
  if (r->trusted && r->taken)
    {
      /* the data durable before the rename; a rename lost in a crash leaves no record */
      if (pgd_image_info (image, &info, &err) < 0
          || record_write (r, image, info.top_file, PGD_WRITE_NO_DIRSYNC, &err) < 0)
        pgd_log (PGD_LOG_WARN, "layer %s: change record not saved (full comparisons follow): %s",
                 id, err.msg);
      else
        pgd_log (PGD_LOG_DEBUG, "layer %s: change record saved, %zu entries", id, r->n);
    }
  pthread_mutex_unlock (&r->lock);
  rec_destroy (t, r);
}

void
pgd_track_drop (struct pgd_tracker *t, const char *id, const char *image)
{
  char path[PATH_MAX];
  struct pgd_err err;

  if (t != NULL)
    {
      PGD_SCOPED_LOCK (&t->lock);
      struct track_rec *r = pgd_track_find (t, id);
      if (r != NULL)
        rec_free (t, r);
    }
  record_path (path, image);
  if (unlink (path) == 0 && pgd_fsync_dir (image, &err) < 0)
    pgd_log (PGD_LOG_WARN, "%s", err.msg);
}
