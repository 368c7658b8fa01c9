/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer harness: the input bytes are a layer tar, fed through a memfd into
   pgd_diff_apply on a fresh directory <base>/outer/root. Beside it live a sentinel
   tree (<base>/sentinel: a file, a directory, a symlink) and <base>/outer itself; after
   every input, everything under <base> except root/ must be exactly as before
   (names, types, modes, owners, link counts, times, contents), whether the apply
   succeeded or not. Escapes by "..", absolute names, symlinks or hardlinks all show
   up as a changed or new entry there. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diff/diff.h"
#include "log.h"
#include "util.h"

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static char base[PATH_MAX];
static char root[PATH_MAX + 32];
static char *before; /* the snapshot taken at start */

/* The snapshot being built by walk (). */
static char *snap;
static size_t snap_len, snap_cap;

static void
die (const char *what)
{
  fprintf (stderr, "fuzz_apply: %s: %s\n", what, strerror (errno));
  abort ();
}

static void snap_add (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

static void
snap_add (const char *fmt, ...)
{
  va_list ap;
  char line[PATH_MAX * 3];
  int n;

  va_start (ap, fmt);
  n = vsnprintf (line, sizeof line, fmt, ap);
  va_end (ap);
  if (n < 0)
    die ("snapshot line");
  if (snap_len + (size_t)n + 1 > snap_cap)
    {
      snap_cap = (snap_len + (size_t)n + 1) * 2;
      snap = realloc (snap, snap_cap);
      if (snap == NULL)
        die ("snapshot memory");
    }
  memcpy (snap + snap_len, line, (size_t)n + 1);
  snap_len += (size_t)n;
}

/* FNV-1a of a regular file's content. */
static uint64_t
file_hash (const char *path)
{
  uint64_t h = 1469598103934665603ULL;
  unsigned char buf[4096];
  ssize_t n;
  int fd = open (path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

  if (fd < 0)
    return 0;
  while ((n = read (fd, buf, sizeof buf)) > 0)
    for (ssize_t i = 0; i < n; i++)
      h = (h ^ buf[i]) * 1099511628211ULL;
  close (fd);
  return h;
}

static int
walk_one (const char *path, const struct stat *st, int type, struct FTW *ftw)
{
  char target[PATH_MAX] = "";

  (void)type;
  (void)ftw;
  /* the apply's own root is free to change (its own entry included: it is replaced) */
  if (strncmp (path, root, strlen (root)) == 0
      && (path[strlen (root)] == '\0' || path[strlen (root)] == '/'))
    return 0;
  /* <base>/outer gets a new root/ for every input: its times move, nothing else */
  bool outer = strlen (path) == strlen (root) - 5 && strncmp (path, root, strlen (path)) == 0;
  if (S_ISLNK (st->st_mode) && readlink (path, target, sizeof target - 1) < 0)
    target[0] = '\0';
  snap_add ("%s mode=%o uid=%u gid=%u nlink=%lu size=%lld mtime=%lld.%09ld hash=%llx -> %s\n", path,
            (unsigned)st->st_mode, (unsigned)st->st_uid, (unsigned)st->st_gid,
            (unsigned long)st->st_nlink, (long long)st->st_size,
            outer ? 0LL : (long long)st->st_mtim.tv_sec, outer ? 0L : st->st_mtim.tv_nsec,
            (unsigned long long)(S_ISREG (st->st_mode) ? file_hash (path) : 0), target);
  return 0;
}

/* A text listing of <base> without root/: what must never change. */
static char *
snapshot (void)
{
  snap = NULL;
  snap_len = snap_cap = 0;
  snap_add ("%s", "");
  if (nftw (base, walk_one, 16, FTW_PHYS) < 0)
    die ("walk");
  return snap;
}

static void
remove_base (void)
{
  struct pgd_err err;
  if (base[0] && pgd_rm_rf (base, &err) < 0)
    fprintf (stderr, "fuzz_apply: cleanup: %s\n", err.msg);
}

static void
put_file (const char *path, const char *text)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0 || write (fd, text, strlen (text)) != (ssize_t)strlen (text))
    die (path);
  close (fd);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  char path[PATH_MAX + 64];
  const char *tmp = getenv ("TMPDIR");

  (void)argc;
  (void)argv;
  pgd_log_set_level (PGD_LOG_ERROR);
  snprintf (base, sizeof base, "%s/pgd-fuzz-apply.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp (base) == NULL)
    die ("mkdtemp");
  atexit (remove_base);
  snprintf (path, sizeof path, "%s/outer", base);
  if (mkdir (path, 0755) < 0)
    die (path);
  snprintf (path, sizeof path, "%s/sentinel", base);
  if (mkdir (path, 0755) < 0)
    die (path);
  snprintf (path, sizeof path, "%s/sentinel/keep", base);
  put_file (path, "sentinel\n");
  snprintf (path, sizeof path, "%s/sentinel/sub", base);
  if (mkdir (path, 0700) < 0)
    die (path);
  snprintf (path, sizeof path, "%s/sentinel/link", base);
  if (symlink ("keep", path) < 0)
    die (path);
  snprintf (root, sizeof root, "%s/outer/root", base);
  if (mkdir (root, 0755) < 0)
    die (root);
  before = snapshot ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static struct pgd_idmap uid = { 0, 100000, 65536 }, gid = { 0, 100000, 65536 };
  struct pgd_idmaps maps = { &uid, 1, &gid, 1 };
  struct pgd_err err = { 0 };
  int64_t applied = 0;
  int fd, rc;
  char *after;

  if (pgd_rm_rf (root, &err) < 0)
    {
      fprintf (stderr, "fuzz_apply: %s\n", err.msg);
      abort ();
    }
  if (mkdir (root, 0755) < 0)
    die (root);
  fd = memfd_create ("fuzz-tar", MFD_CLOEXEC);
  if (fd < 0)
    die ("memfd_create");
  for (size_t off = 0; off < size;)
    {
      ssize_t n = write (fd, data + off, size - off);
      if (n < 0)
        die ("write memfd");
      off += (size_t)n;
    }
  if (lseek (fd, 0, SEEK_SET) < 0)
    die ("lseek");
  /* odd sizes with ID maps, even ones without: both owner paths get inputs */
  rc = pgd_diff_apply (root, fd, (size & 1) ? &maps : NULL, &applied, &err);
  if (rc < 0 && err.msg[0] == '\0')
    {
      fprintf (stderr, "fuzz_apply: apply failed without a message\n");
      abort ();
    }
  /* the stream is read to its end even after an error */
  if (lseek (fd, 0, SEEK_CUR) != (off_t)size)
    {
      fprintf (stderr, "fuzz_apply: stream not read to its end (rc %d: %s)\n", rc, err.msg);
      abort ();
    }
  close (fd);
  after = snapshot ();
  if (strcmp (before, after) != 0)
    {
      fprintf (stderr,
               "fuzz_apply: something outside the root changed (rc %d: %s)\n"
               "before:\n%s\nafter:\n%s\n",
               rc, err.msg, before, after);
      abort ();
    }
  free (after);
  return 0;
}
