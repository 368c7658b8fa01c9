/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Test helpers for the delta/chain/engine suites: images made with libploop directly,
   shell commands, temporary directories on ext4 (libploop needs O_DIRECT). */
#ifndef PGD_TEST_PLOOP_FIXTURE_H
#define PGD_TEST_PLOOP_FIXTURE_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ploop/libploop.h>
#include <ploop/ploop_if.h>

#define FX_DD "DiskDescriptor.xml"
/* CLI `ploop` reads past short argv strings (PLOOP.md §5.4 pitfall 1): pad the env */
#define FX_PLOOP_ENV "FX_PAD=$(printf '%%08192d' 0) "

/* Run a shell command built from FMT; return its exit status (-1 when killed). */
static inline int __attribute__ ((format (printf, 1, 2))) fx_sh (const char *fmt, ...)
{
  char cmd[8192];
  va_list ap;
  int st;

  va_start (ap, fmt);
  vsnprintf (cmd, sizeof cmd, fmt, ap);
  va_end (ap);
  st = system (cmd);
  if (st == -1 || !WIFEXITED (st))
    return -1;
  return WEXITSTATUS (st);
}

/* Run a shell command and return the first line of its stdout in OUT. */
static inline int __attribute__ ((format (printf, 3, 4)))
fx_sh_out (char *out, size_t outlen, const char *fmt, ...)
{
  char cmd[8192];
  va_list ap;
  FILE *f;
  int st;

  va_start (ap, fmt);
  vsnprintf (cmd, sizeof cmd, fmt, ap);
  va_end (ap);
  out[0] = '\0';
  f = popen (cmd, "r");
  if (f == NULL)
    return -1;
  if (fgets (out, (int)outlen, f) == NULL)
    out[0] = '\0';
  out[strcspn (out, "\n")] = '\0';
  while (fgetc (f) != EOF)
    ;
  st = pclose (f);
  return WIFEXITED (st) ? WEXITSTATUS (st) : -1;
}

/* A fresh directory under /var/tmp (ext4 here; tmpfs would break O_DIRECT). */
static inline void
fx_tmpdir (char *out, size_t len, const char *tag)
{
  snprintf (out, len, "/var/tmp/pgd-%s.XXXXXX", tag);
  cr_assert_not_null (mkdtemp (out), "mkdtemp %s: %s", out, strerror (errno));
}

/* Create an empty ploop v1 image (root.hdd + DD) of SIZE bytes in DIR. */
static inline void
fx_create_image (const char *dir, uint64_t size, unsigned cluster_sectors)
{
  char *img = calloc (1, 2 * PATH_MAX);
  struct ploop_create_param p;

  ploop_set_verbose_level (PLOOP_LOG_NOSTDOUT);
  memset (&p, 0, sizeof p);
  snprintf (img, PATH_MAX, "%s/root.hdd", dir);
  p.size = size / 512;
  p.mode = PLOOP_EXPANDED_MODE;
  p.image = img;
  p.fstype = NULL;
  p.blocksize = cluster_sectors;
  p.fmt_version = PLOOP_FMT_V1;
  cr_assert_eq (ploop_create_image (&p), 0, "ploop_create_image %s: %s", img,
                ploop_get_last_error ());
  free (img);
}

/* Add a new empty top delta to the (closed) image DIR, in DIR. */
static inline void
fx_snapshot (const char *dir)
{
  char *dd = calloc (1, 2 * PATH_MAX), *sd = calloc (1, 2 * PATH_MAX);
  struct ploop_disk_images_data *di = NULL;
  struct ploop_snapshot_param sp;

  snprintf (dd, PATH_MAX, "%s/" FX_DD, dir);
  snprintf (sd, PATH_MAX, "%s", dir);
  cr_assert_eq (ploop_read_disk_descr (&di, dd), 0, "read %s: %s", dd, ploop_get_last_error ());
  memset (&sp, 0, sizeof sp);
  sp.snap_dir = sd;
  cr_assert_eq (ploop_create_snapshot (di, &sp), 0, "snapshot %s: %s", dir,
                ploop_get_last_error ());
  ploop_free_diskdescriptor (di);
  free (dd);
  free (sd);
}

/* Make CHILD (existing, empty) a clone of the closed image PARENT: hard-linked deltas,
   the same chain in a new DD, a private empty top (PLOOP.md §4.1). */
static inline void
fx_clone (const char *parent, const char *child)
{
  char *dd = calloc (1, 2 * PATH_MAX), *cdd = calloc (1, 2 * PATH_MAX);
  struct ploop_disk_images_data *di = NULL;
  char **keep;

  snprintf (dd, PATH_MAX, "%s/" FX_DD, parent);
  snprintf (cdd, PATH_MAX, "%s/" FX_DD, child);
  cr_assert_eq (ploop_read_disk_descr (&di, dd), 0, "read %s", dd);
  keep = calloc (di->nimages, sizeof *keep);
  for (int i = 0; i < di->nimages; i++)
    {
      char *to = calloc (1, PATH_MAX);
      const char *base = strrchr (di->images[i]->file, '/');
      snprintf (to, PATH_MAX, "%s/%s", child, base ? base + 1 : di->images[i]->file);
      cr_assert_eq (link (di->images[i]->file, to), 0, "link %s: %s", to, strerror (errno));
      keep[i] = di->images[i]->file;
      di->images[i]->file = to;
    }
  cr_assert_eq (ploop_store_diskdescriptor (cdd, di), 0, "store %s", cdd);
  for (int i = 0; i < di->nimages; i++)
    {
      free (di->images[i]->file);
      di->images[i]->file = keep[i];
    }
  free (keep);
  ploop_free_diskdescriptor (di);
  free (dd);
  free (cdd);
  fx_snapshot (child);
}

/* Fill BUF with bytes derived from SEED and position (distinct per block). */
static inline void
fx_pattern (unsigned char *buf, size_t len, uint64_t off, unsigned seed)
{
  for (size_t i = 0; i < len; i++)
    {
      uint64_t x = (off + i) / 8 * 0x9E3779B97F4A7C15ULL + seed * 0x632BE59BD9B4E5DULL;
      buf[i] = (unsigned char)(x >> (8 * ((off + i) % 8)));
    }
}

/* `qemu-img check -f parallels PATH` finds no error. QEMU 7.2 counts the header clusters
   after the first as leaked while a delta has no data cluster (exit 3): accepted then. */
static inline bool
fx_qemu_check_ok (const char *path)
{
  unsigned char raw[64];
  uint32_t sectors, fbo, flags;
  int fd, rc;

  rc = fx_sh ("qemu-img check -f parallels '%s' >/dev/null 2>&1", path);
  if (rc == 0)
    return true;
  fx_sh ("qemu-img check -f parallels '%s' >&2", path);
  fd = open (path, O_RDONLY);
  if (fd < 0 || pread (fd, raw, 64, 0) != 64)
    return false;
  close (fd);
  memcpy (&sectors, raw + 28, 4);
  memcpy (&fbo, raw + 48, 4);
  memcpy (&flags, raw + 52, 4);
  return rc == 3 && (flags & 1) && fbo > sectors;
}

/* Every delta of image DIR passes `ploop check -f -c -r` and `qemu-img check`. */
static inline void
fx_check_deltas (const char *dir)
{
  DIR *d = opendir (dir);
  struct dirent *de;
  int n = 0;

  cr_assert_not_null (d);
  while ((de = readdir (d)) != NULL)
    {
      if (strncmp (de->d_name, "root.hdd", 8) != 0)
        continue;
      /* a thin delta (BAT partly a hole) is checked written out in full, as
         `ploop-graphdriver allocate` would make it: ploop calls any hole sparse */
      cr_expect_eq (fx_sh ("cp --sparse=never '%s/%s' '%s/.full' && " FX_PLOOP_ENV
                           "ploop check -f -c -r '%s/.full' >/dev/null 2>&1",
                           dir, de->d_name, dir, dir),
                    0, "ploop check -f -c -r %s/%s", dir, de->d_name);
      fx_sh ("rm -f '%s/.full'", dir);
      char path[PATH_MAX];
      snprintf (path, sizeof path, "%s/%s", dir, de->d_name);
      cr_expect (fx_qemu_check_ok (path), "qemu-img check %s", path);
      n++;
    }
  closedir (d);
  cr_expect_gt (n, 0, "no deltas in %s", dir);
}

/* sha256 of the merged content of image DIR (PLOOP.md §8.3): copy, merge all, convert. */
static inline void
fx_merged_sha256 (const char *dir, char *out, size_t len)
{
  char tmp[PATH_MAX];

  fx_tmpdir (tmp, sizeof tmp, "merge");
  cr_assert_eq (fx_sh ("cp -a --sparse=always '%s'/. '%s'/ && rm -f '%s'/*.lck", dir, tmp, tmp), 0);
  cr_assert_eq (fx_sh ("cd '%s' && { [ $(ls root.hdd* | wc -l) -le 1 ] || " FX_PLOOP_ENV
                       "ploop snapshot-merge -A " FX_DD " >/dev/null 2>&1; }",
                       tmp),
                0, "merge in %s", tmp);
  cr_assert_eq (fx_sh_out (out, len,
                           "cd '%s' && qemu-img convert -f parallels -O raw root.hdd m.raw && "
                           "sha256sum m.raw | cut -d' ' -f1",
                           tmp),
                0);
  fx_sh ("rm -rf '%s'", tmp);
}

#endif
