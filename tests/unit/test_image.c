/* SPDX-License-Identifier: GPL-2.0-or-later */
/* driver/engine/image.c against real libploop 1.15, ploop CLI and qemu-img. Needs root and an
   O_DIRECT-capable file system for the temporary images (/var/tmp, not tmpfs). */
#include <criterion/criterion.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ploop/libploop.h>
#include <ploop/ploop_if.h>

#include <ploop/ploop1_image.h> /* after ploop_if.h: uses PLOOP_FMT_V1 */

#include "engine/delta.h"
#include "engine/image.h"
#include "util.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

static char root[256];

static void
setup (void)
{
  char pad[8193];

  /* the ploop CLI reads past short argv strings (PLOOP.md pitfall 18) */
  memset (pad, 'a', sizeof pad - 1);
  pad[sizeof pad - 1] = '\0';
  setenv ("PGD_TEST_PAD", pad, 1);
  snprintf (root, sizeof root, "/var/tmp/pgd-test-image.XXXXXX");
  cr_assert_not_null (mkdtemp (root), "mkdtemp: %s", strerror (errno));
}

static void
teardown (void)
{
  struct pgd_err err;

  if (root[0] && pgd_rm_rf (root, &err) < 0)
    fprintf (stderr, "cleanup %s: %s\n", root, err.msg);
}

TestSuite (image, .init = setup, .fini = teardown);

/* ---- helpers ---------------------------------------------------------------- */

/* ROOT/NAME into OUT; made as a directory when MAKE. */
static void
dir_at (char *out, const char *name, bool make)
{
  snprintf (out, PATH_MAX, "%s/%s", root, name);
  if (make)
    cr_assert_eq (mkdir (out, 0700), 0, "mkdir %s: %s", out, strerror (errno));
}

static void
create_ok (const char *dir, uint64_t size, uint32_t cluster)
{
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_image_create (dir, size, cluster, &err), 0, "create: %s", err.msg);
}

static void
clone_ok (const char *parent, const char *child)
{
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_image_clone (parent, child, &err), 0, "clone: %s", err.msg);
}

static void
check_ok (const char *dir, bool repair)
{
  struct pgd_err err = { 0 };
  cr_assert_eq (pgd_image_check (dir, repair, &err), 0, "check %s: %s", dir, err.msg);
}

static struct pgd_image_info
info_ok (const char *dir)
{
  struct pgd_err err = { 0 };
  struct pgd_image_info info;
  cr_assert_eq (pgd_image_info (dir, &info, &err), 0, "info %s: %s", dir, err.msg);
  return info;
}

/* ERR's message must contain WHAT. */
static void
expect_msg (const struct pgd_err *err, const char *what)
{
  cr_assert_not_null (strstr (err->msg, what), "error \"%s\" lacks \"%s\"", err->msg, what);
}

static struct ploop_pvd_header
header_of (const char *path)
{
  struct ploop_pvd_header h;
  int fd = open (path, O_RDONLY);
  cr_assert_geq (fd, 0, "open %s: %s", path, strerror (errno));
  cr_assert_eq (pread (fd, &h, sizeof h, 0), (ssize_t)sizeof h);
  close (fd);
  return h;
}

static void
put_u32 (const char *path, off_t off, uint32_t v)
{
  uint32_t le = htole32 (v);
  int fd = open (path, O_WRONLY);
  cr_assert_geq (fd, 0, "open %s: %s", path, strerror (errno));
  cr_assert_eq (pwrite (fd, &le, sizeof le, off), (ssize_t)sizeof le);
  cr_assert_eq (fsync (fd), 0);
  close (fd);
}

static struct stat
stat_ok (const char *path)
{
  struct stat st;
  cr_assert_eq (stat (path, &st), 0, "stat %s: %s", path, strerror (errno));
  return st;
}

/* Run a shell command; its exit status. */
static int __attribute__ ((format (printf, 1, 2))) sh (const char *fmt, ...)
{
  char cmd[3 * PATH_MAX];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (cmd, sizeof cmd, fmt, ap);
  va_end (ap);
  int st = system (cmd);
  return WIFEXITED (st) ? WEXITSTATUS (st) : 128 + WTERMSIG (st);
}

/* The delta, thin (its BAT partly a hole), passes our check; written out in full (a
   non-sparse copy, what `ploop-graphdriver allocate` makes of it) it passes ploop's
   forced read-only check and (for one-cluster headers, where qemu 7.2 does not report
   the header clusters as leaked) qemu-img check, which reads holes as zeros anyway. */
static void
delta_passes_tools (const char *file, bool qemu)
{
  struct pgd_err err = { 0 };
  char full[PATH_MAX + 32];

  cr_assert_eq (pgd_delta_check_thin (file, &err), 0, "check %s: %s", file, err.msg);
  snprintf (full, sizeof full, "%s/full.hdd", root);
  cr_assert_eq (sh ("cp --sparse=never '%s' '%s'", file, full), 0);
  cr_assert_eq (sh ("ploop check -f -c -r '%s' >/dev/null 2>&1", full), 0, "ploop check %s", file);
  if (qemu)
    cr_assert_eq (sh ("qemu-img check -f parallels '%s' >/dev/null 2>&1", file), 0,
                  "qemu-img check %s", file);
  unlink (full);
}

static uint64_t
qemu_virtual_size (const char *file)
{
  char cmd[PATH_MAX + 64], line[512];
  unsigned long long v = 0;

  snprintf (cmd, sizeof cmd, "qemu-img info -f parallels --output=json '%s'", file);
  FILE *p = popen (cmd, "r");
  cr_assert_not_null (p);
  while (fgets (line, sizeof line, p))
    if (sscanf (line, " \"virtual-size\": %llu", &v) == 1)
      break;
  while (fgets (line, sizeof line, p))
    ;
  cr_assert_eq (pclose (p), 0, "qemu-img info %s", file);
  return v;
}

static char *
slurp (const char *path, size_t *len)
{
  struct pgd_err err = { 0 };
  char *data;
  cr_assert_eq (pgd_read_file (path, &data, len, &err), 0, "%s", err.msg);
  return data;
}

static bool
same_file (const char *a, const char *b)
{
  size_t la, lb;
  char *da = slurp (a, &la), *db = slurp (b, &lb);
  bool same = la == lb && memcmp (da, db, la) == 0;
  free (da);
  free (db);
  return same;
}

static unsigned
count (const char *hay, const char *needle)
{
  unsigned n = 0;
  for (const char *p = strstr (hay, needle); p; p = strstr (p + 1, needle))
    n++;
  return n;
}

/* ---- create ----------------------------------------------------------------- */

Test (image, create_1m_clusters)
{
  char dir[PATH_MAX], file[PATH_MAX + 32];

  dir_at (dir, "a", true);
  create_ok (dir, GiB, MiB);
  snprintf (file, sizeof file, "%s/" PGD_IMAGE_BASE, dir);
  struct stat st = stat_ok (file);
  cr_assert_eq (st.st_size, (off_t)MiB);
  char dd[PATH_MAX + 32];
  snprintf (dd, sizeof dd, "%s/" PGD_IMAGE_DD, dir);
  stat_ok (dd);

  struct ploop_pvd_header h = header_of (file);
  cr_assert_eq (memcmp (h.m_Sig, SIGNATURE_STRUCTURED_DISK_V1, 16), 0, "v1 signature");
  cr_assert_eq (le32toh (h.m_Type), 2u);
  cr_assert_eq (le32toh (h.m_Sectors), 2048u);
  cr_assert_eq (le32toh (h.m_Size), 1024u);
  cr_assert_eq (le32toh (h.m_SizeInSectors_v1), (uint32_t)(GiB / 512));
  cr_assert_eq (le32toh (h.Unused), 0u);
  cr_assert_eq (le32toh (h.m_DiskInUse), 0u);
  cr_assert_eq (le32toh (h.m_FirstBlockOffset), 2048u);
  cr_assert_eq (le32toh (h.m_Flags) & CIF_Empty, (uint32_t)CIF_Empty);
  cr_assert_eq (qemu_virtual_size (file), GiB);
  delta_passes_tools (file, true);
  check_ok (dir, false);

  struct pgd_image_info info = info_ok (dir);
  cr_assert_eq (info.virtual_size, GiB);
  cr_assert_eq (info.cluster_size, MiB);
  cr_assert_eq (info.ndeltas, 1u);
  cr_assert_not (info.top_shared);
  cr_assert_str_eq (info.top_file, file);
  /* thin: the header page and the DD, not the 1 MiB header cluster */
  cr_assert_lt (info.own_bytes, 64 << 10, "own bytes %llu", (unsigned long long)info.own_bytes);
}

Test (image, create_small_clusters_rounds_size)
{
  char dir[PATH_MAX], file[PATH_MAX + 32];

  /* 32 KiB clusters: the header takes 5 clusters (PLOOP.md §1.2); the size rounds up */
  dir_at (dir, "a", true);
  create_ok (dir, GiB + 1, 32 << 10);
  snprintf (file, sizeof file, "%s/" PGD_IMAGE_BASE, dir);
  struct ploop_pvd_header h = header_of (file);
  cr_assert_eq (le32toh (h.m_Sectors), 64u);
  cr_assert_eq (le32toh (h.m_Size), 32769u);
  cr_assert_eq (le32toh (h.m_FirstBlockOffset), 320u);
  cr_assert_eq (stat_ok (file).st_size, 320 * 512);
  uint64_t want = GiB + (32 << 10);
  cr_assert_eq (qemu_virtual_size (file), want);
  cr_assert_eq (info_ok (dir).virtual_size, want);
  cr_assert_eq (info_ok (dir).cluster_size, 32u << 10);
  delta_passes_tools (file, false);
  check_ok (dir, false);
}

Test (image, create_bad_input)
{
  char dir[PATH_MAX], missing[PATH_MAX], junk[PATH_MAX + 32];
  struct pgd_err err = { 0 };

  dir_at (dir, "a", true);
  cr_assert_lt (pgd_image_create (dir, GiB, 16 << 10, &err), 0);
  expect_msg (&err, "cluster size");
  cr_assert_lt (pgd_image_create (dir, GiB, 3 * MiB, &err), 0);
  expect_msg (&err, "power of two");
  cr_assert_lt (pgd_image_create (dir, 0, MiB, &err), 0);
  expect_msg (&err, "size 0");
  cr_assert_lt (pgd_image_create (dir, 4096 * GiB, MiB, &err), 0);
  expect_msg (&err, "2 TiB");

  dir_at (missing, "missing", false);
  cr_assert_lt (pgd_image_create (missing, GiB, MiB, &err), 0);
  expect_msg (&err, missing);
  cr_assert_eq (err.errnum, ENOENT);

  snprintf (junk, sizeof junk, "%s/junk", dir);
  close (open (junk, O_CREAT | O_WRONLY, 0600));
  cr_assert_lt (pgd_image_create (dir, GiB, MiB, &err), 0);
  expect_msg (&err, "junk");
  cr_assert_eq (err.errnum, ENOTEMPTY);
}

/* ---- clone ------------------------------------------------------------------ */

Test (image, clone_shares_parent_deltas)
{
  char a[PATH_MAX], b[PATH_MAX], abase[PATH_MAX + 32], bbase[PATH_MAX + 32];
  char add[PATH_MAX + 32], bdd[PATH_MAX + 32], copy[PATH_MAX + 32], ddcopy[PATH_MAX + 32];

  dir_at (a, "a", true);
  dir_at (b, "b", true);
  create_ok (a, 2 * GiB, MiB);
  snprintf (abase, sizeof abase, "%s/" PGD_IMAGE_BASE, a);
  snprintf (add, sizeof add, "%s/" PGD_IMAGE_DD, a);
  snprintf (copy, sizeof copy, "%s/base.copy", root);
  snprintf (ddcopy, sizeof ddcopy, "%s/dd.copy", root);
  cr_assert_eq (sh ("cp '%s' '%s' && cp '%s' '%s'", abase, copy, add, ddcopy), 0);

  clone_ok (a, b);

  /* the parent is untouched and its delta is linked */
  cr_assert (same_file (abase, copy), "parent delta changed");
  cr_assert (same_file (add, ddcopy), "parent DD changed");
  snprintf (bbase, sizeof bbase, "%s/" PGD_IMAGE_BASE, b);
  struct stat sa = stat_ok (abase), sb = stat_ok (bbase);
  cr_assert_eq (sa.st_nlink, 2u);
  cr_assert_eq (sa.st_ino, sb.st_ino);

  /* the child's DD: the parent's delta plus a new top */
  snprintf (bdd, sizeof bdd, "%s/" PGD_IMAGE_DD, b);
  char *dd = slurp (bdd, NULL);
  cr_assert_eq (count (dd, "<File>"), 2u, "%s", dd);
  cr_assert_not_null (strstr (dd, "<File>" PGD_IMAGE_BASE "</File>"), "%s", dd);
  free (dd);

  struct pgd_image_info ib = info_ok (b), ia = info_ok (a);
  cr_assert_eq (ib.ndeltas, 2u);
  cr_assert_not (ib.top_shared);
  cr_assert_eq (ib.virtual_size, 2 * GiB);
  cr_assert_eq (strncmp (ib.top_file, b, strlen (b)), 0, "top %s not in %s", ib.top_file, b);
  cr_assert_neq (strcmp (ib.top_file, bbase), 0);
  struct stat st = stat_ok (ib.top_file);
  cr_assert_eq (st.st_nlink, 1u);
  cr_assert_eq (ib.own_bytes,
                (uint64_t)st.st_blocks * 512 + (uint64_t)stat_ok (bdd).st_blocks * 512);
  cr_assert (ia.top_shared);
  cr_assert_eq (ia.ndeltas, 1u);
  cr_assert_eq (ia.own_bytes, (uint64_t)stat_ok (add).st_blocks * 512);

  struct ploop_pvd_header h = header_of (ib.top_file);
  cr_assert_eq (le32toh (h.m_DiskInUse), 0u);
  cr_assert_eq (le32toh (h.m_Flags) & CIF_Empty, (uint32_t)CIF_Empty);
  cr_assert_eq (le32toh (h.m_Sectors), 2048u);
  check_ok (a, false);
  check_ok (b, false);
  delta_passes_tools (ib.top_file, true);
  cr_assert (same_file (abase, copy), "parent delta changed by the checks");
}

Test (image, clone_chain_of_10)
{
  char dirs[11][PATH_MAX], base0[PATH_MAX + 32], copy[PATH_MAX + 32];

  dir_at (dirs[0], "l0", true);
  create_ok (dirs[0], GiB, 256 << 10);
  snprintf (base0, sizeof base0, "%s/" PGD_IMAGE_BASE, dirs[0]);
  snprintf (copy, sizeof copy, "%s/base.copy", root);
  cr_assert_eq (sh ("cp '%s' '%s'", base0, copy), 0);
  for (int i = 1; i <= 10; i++)
    {
      char name[16];
      snprintf (name, sizeof name, "l%d", i);
      dir_at (dirs[i], name, true);
      clone_ok (dirs[i - 1], dirs[i]);
      struct pgd_image_info info = info_ok (dirs[i]);
      cr_assert_eq (info.ndeltas, (unsigned)i + 1);
      cr_assert_not (info.top_shared);
      cr_assert (info_ok (dirs[i - 1]).top_shared, "level %d top not shared", i - 1);
    }
  /* the base is linked from all 11 layers and never written */
  cr_assert_eq (stat_ok (base0).st_nlink, 11u);
  cr_assert (same_file (base0, copy));
  check_ok (dirs[10], false);
  check_ok (dirs[5], false);
  cr_assert_eq (info_ok (dirs[10]).virtual_size, GiB);
}

Test (image, clone_refuses_past_127_deltas)
{
  char prev[PATH_MAX], next[PATH_MAX];
  struct pgd_err err = { 0 };

  /* 64 MiB, 64 KiB clusters: each delta is a single 64 KiB header cluster */
  dir_at (prev, "l0", true);
  create_ok (prev, 64 * MiB, 64 << 10);
  /* libploop 1.15 snapshots a DD of at most 126 images: chains end at 127 deltas */
  for (int i = 1; i < 127; i++)
    {
      char name[16];
      snprintf (name, sizeof name, "l%d", i);
      dir_at (next, name, true);
      clone_ok (prev, next);
      memcpy (prev, next, sizeof prev);
    }
  cr_assert_eq (info_ok (prev).ndeltas, 127u);
  check_ok (prev, false);
  dir_at (next, "l127", true);
  cr_assert_lt (pgd_image_clone (prev, next, &err), 0);
  expect_msg (&err, "limit of 127");
  cr_assert_eq (sh ("[ -z \"$(ls -A '%s')\" ]", next), 0, "child dir not left empty");
}

Test (image, clone_refuses_parent_in_use)
{
  char a[PATH_MAX], b[PATH_MAX], abase[PATH_MAX + 32];
  struct pgd_err err = { 0 };

  dir_at (a, "a", true);
  dir_at (b, "b", true);
  create_ok (a, GiB, MiB);
  snprintf (abase, sizeof abase, "%s/" PGD_IMAGE_BASE, a);
  put_u32 (abase, 44, SIGNATURE_DISK_IN_USE);
  cr_assert_lt (pgd_image_clone (a, b, &err), 0);
  expect_msg (&err, "in use");
  cr_assert_eq (err.errnum, EBUSY);
  cr_assert_eq (stat_ok (abase).st_nlink, 1u);
  cr_assert_eq (sh ("[ -z \"$(ls -A '%s')\" ]", b), 0, "child dir not left empty");
  cr_assert_eq (le32toh (header_of (abase).m_DiskInUse), SIGNATURE_DISK_IN_USE, "flag touched");
}

Test (image, clone_bad_input)
{
  char a[PATH_MAX], b[PATH_MAX], nodd[PATH_MAX], missing[PATH_MAX], junk[PATH_MAX + 32];
  struct pgd_err err = { 0 };

  dir_at (a, "a", true);
  dir_at (b, "b", true);
  dir_at (nodd, "nodd", true);
  dir_at (missing, "missing", false);
  create_ok (a, GiB, MiB);

  cr_assert_lt (pgd_image_clone (missing, b, &err), 0);
  expect_msg (&err, missing);
  cr_assert_eq (err.errnum, ENOENT);

  cr_assert_lt (pgd_image_clone (a, missing, &err), 0);
  expect_msg (&err, missing);

  cr_assert_lt (pgd_image_clone (nodd, b, &err), 0);
  expect_msg (&err, PGD_IMAGE_DD);
  cr_assert_eq (err.errnum, ENOENT);

  snprintf (junk, sizeof junk, "%s/junk", b);
  close (open (junk, O_CREAT | O_WRONLY, 0600));
  cr_assert_lt (pgd_image_clone (a, b, &err), 0);
  expect_msg (&err, "junk");
  cr_assert_eq (err.errnum, ENOTEMPTY);
  cr_assert_eq (access (junk, F_OK), 0, "the caller's file was removed");

  cr_assert_lt (pgd_image_clone (a, a, &err), 0);
  cr_assert_eq (info_ok (a).ndeltas, 1u);
}

/* ---- grow ------------------------------------------------------------------- */

Test (image, grow_and_refuse_shrink)
{
  char a[PATH_MAX], b[PATH_MAX];
  struct pgd_err err = { 0 };

  dir_at (a, "a", true);
  dir_at (b, "b", true);
  create_ok (a, GiB, MiB);
  clone_ok (a, b);

  cr_assert_eq (pgd_image_grow (b, 2 * GiB + 1, &err), 0, "%s", err.msg);
  struct pgd_image_info info = info_ok (b);
  cr_assert_eq (info.virtual_size, 2 * GiB + MiB, "rounded up to the cluster");
  cr_assert_eq (qemu_virtual_size (info.top_file), 2 * GiB + MiB);
  cr_assert_eq (info_ok (a).virtual_size, GiB, "the parent keeps its size");
  check_ok (b, false);

  cr_assert_eq (pgd_image_grow (b, 2 * GiB + 2, &err), 0, "same size after rounding: %s", err.msg);
  cr_assert_lt (pgd_image_grow (b, GiB, &err), 0);
  expect_msg (&err, "never shrink");
  cr_assert_eq (info_ok (b).virtual_size, 2 * GiB + MiB);

  /* a's top is linked by b */
  cr_assert_lt (pgd_image_grow (a, 4 * GiB, &err), 0);
  expect_msg (&err, "shared");
  cr_assert_eq (info_ok (a).virtual_size, GiB);

  cr_assert_lt (pgd_image_grow (b, 4096 * GiB, &err), 0);
  expect_msg (&err, "2 TiB");
}

Test (image, grow_moves_header_clusters)
{
  char a[PATH_MAX];
  struct pgd_err err = { 0 };

  /* 64 MiB with 64 KiB clusters has a one-cluster header; 10 GiB needs 11 */
  dir_at (a, "a", true);
  create_ok (a, 64 * MiB, 64 << 10);
  cr_assert_eq (pgd_image_grow (a, 10 * GiB, &err), 0, "%s", err.msg);
  struct pgd_image_info info = info_ok (a);
  cr_assert_eq (info.virtual_size, 10 * GiB);
  struct ploop_pvd_header h = header_of (info.top_file);
  cr_assert_eq (le32toh (h.m_Size), 163840u);
  cr_assert_eq (le32toh (h.m_FirstBlockOffset), 11u * 128);
  check_ok (a, false);
  delta_passes_tools (info.top_file, false);
}

/* ---- thin deltas ------------------------------------------------------------ */

/* Every delta of image DIR costs under 64 KiB of disk and passes our check. */
static void
expect_thin (const char *dir)
{
  struct pgd_image_info info = info_ok (dir);
  cr_expect_lt (info.own_bytes, 64 << 10, "%s owns %llu bytes", dir,
                (unsigned long long)info.own_bytes);
  check_ok (dir, false);
}

Test (image, thin_deltas_cost_the_same_at_1t)
{
  char a[PATH_MAX], b[PATH_MAX], c[PATH_MAX], d[PATH_MAX], e[PATH_MAX];
  struct pgd_err err = { 0 };
  uint64_t filled;

  /* 1 TiB, 64 KiB clusters: a BAT of 64 MiB in every delta, none of it written */
  dir_at (a, "a", true);
  dir_at (b, "b", true);
  dir_at (c, "c", true);
  create_ok (a, 1ULL << 40, 64 << 10);
  clone_ok (a, b);
  clone_ok (b, c);
  expect_thin (a);
  expect_thin (b);
  expect_thin (c);
  struct pgd_image_info info = info_ok (c);
  cr_assert_eq (info.ndeltas, 3u);
  cr_assert_eq (info.virtual_size, 1ULL << 40);
  struct ploop_pvd_header h = header_of (info.top_file);
  cr_assert_eq (le32toh (h.m_Size), 16777216u);
  cr_assert_eq (le32toh (h.m_FirstBlockOffset), 1025u * 128);
  cr_assert_eq (stat_ok (info.top_file).st_size, 1025 * (64 << 10));

  /* the grow of a fresh clone (docker's size=1T) stays thin too */
  dir_at (d, "d", true);
  dir_at (e, "e", true);
  create_ok (d, 10 * GiB, 64 << 10);
  clone_ok (d, e);
  cr_assert_eq (pgd_image_grow (e, 1ULL << 40, &err), 0, "%s", err.msg);
  expect_thin (e);
  cr_assert_eq (info_ok (e).virtual_size, 1ULL << 40);
  cr_assert_eq (sh ("grep -q '<Disk_size>2147483648</Disk_size>' '%s/" PGD_IMAGE_DD "'", e), 0);

  /* allocate writes the holes out: libploop's own check then passes in place */
  cr_assert_eq (pgd_image_allocate (c, &filled, &err), 0, "%s", err.msg);
  cr_assert_eq (filled, 3 * (1025ULL * (64 << 10) - 4096));
  char top[PATH_MAX];
  snprintf (top, sizeof top, "%s", info.top_file);
  cr_assert_eq (sh ("ploop check -f -c -r '%s' >/dev/null 2>&1", top), 0);
  cr_assert_geq (info_ok (c).own_bytes, 1025ULL * (64 << 10));
  check_ok (c, false);
  check_ok (a, false); /* the base a shares with c was written out: same bytes */
  cr_assert_eq (pgd_image_allocate (c, &filled, &err), 0, "%s", err.msg);
  cr_assert_eq (filled, 0u);
}

Test (image, check_rejects_hole_in_data_area)
{
  char a[PATH_MAX], b[PATH_MAX];
  struct pgd_err err = { 0 };

  dir_at (a, "a", true);
  dir_at (b, "b", true);
  create_ok (a, GiB, 64 << 10);
  clone_ok (a, b);
  char top[PATH_MAX];
  snprintf (top, sizeof top, "%s", info_ok (b).top_file);
  /* one more cluster, never written: a hole in the data area, invalid in any delta */
  struct stat st = stat_ok (top);
  cr_assert_eq (truncate (top, st.st_size + (64 << 10)), 0);
  cr_assert_lt (pgd_image_check (b, false, &err), 0);
  expect_msg (&err, "hole in its data area");
  expect_msg (&err, top);
}

/* ---- check and repair ------------------------------------------------------- */

Test (image, check_detects_bat_entry_past_eof)
{
  char a[PATH_MAX], b[PATH_MAX];
  struct pgd_err err = { 0 };

  dir_at (a, "a", true);
  dir_at (b, "b", true);
  create_ok (a, GiB, MiB);
  clone_ok (a, b);
  check_ok (b, false);
  /* vc 3 of the child's private top → cluster 100000, far past EOF (v1: sectors) */
  struct pgd_image_info info = info_ok (b);
  char topc[PATH_MAX];
  snprintf (topc, sizeof topc, "%s", info.top_file);
  put_u32 (topc, 64 + 3 * 4, 100000u * 2048);
  cr_assert_lt (pgd_image_check (b, false, &err), 0);
  expect_msg (&err, "beyond the end of the file");
  expect_msg (&err, topc);
  check_ok (a, false); /* the shared base is fine */
}

Test (image, repair_clears_in_use)
{
  char a[PATH_MAX], b[PATH_MAX], abase[PATH_MAX + 32], copy[PATH_MAX + 32];
  struct pgd_err err = { 0 };

  dir_at (a, "a", true);
  dir_at (b, "b", true);
  create_ok (a, GiB, MiB);
  clone_ok (a, b);
  snprintf (abase, sizeof abase, "%s/" PGD_IMAGE_BASE, a);
  snprintf (copy, sizeof copy, "%s/base.copy", root);
  cr_assert_eq (sh ("cp '%s' '%s'", abase, copy), 0);
  char top[PATH_MAX];
  snprintf (top, sizeof top, "%s", info_ok (b).top_file);

  put_u32 (top, 44, SIGNATURE_DISK_IN_USE);
  cr_assert_lt (pgd_image_check (b, false, &err), 0);
  expect_msg (&err, "in use");
  /* info must not need libploop's view: works with the flag set and the lock held */
  char lck[PATH_MAX + 32];
  snprintf (lck, sizeof lck, "%s/" PGD_IMAGE_DD ".lck", b);
  int lfd = open (lck, O_RDWR | O_CREAT, 0600);
  cr_assert_geq (lfd, 0);
  cr_assert_eq (flock (lfd, LOCK_EX | LOCK_NB), 0);
  struct pgd_image_info info = info_ok (b);
  cr_assert_eq (info.virtual_size, GiB);
  cr_assert_eq (info.ndeltas, 2u);
  close (lfd);

  check_ok (b, true);
  cr_assert_eq (le32toh (header_of (top).m_DiskInUse), 0u);
  check_ok (b, false);
  delta_passes_tools (top, true);
  cr_assert (same_file (abase, copy), "repair wrote the shared base");
}

Test (image, repair_refuses_shared_top)
{
  char a[PATH_MAX], b[PATH_MAX];
  struct pgd_err err = { 0 };

  dir_at (a, "a", true);
  dir_at (b, "b", true);
  create_ok (a, GiB, MiB);
  clone_ok (a, b);
  cr_assert_lt (pgd_image_check (a, true, &err), 0);
  expect_msg (&err, "shared");
  check_ok (a, false);
}

Test (image, check_and_info_bad_input)
{
  char missing[PATH_MAX], nodd[PATH_MAX];
  struct pgd_err err = { 0 };
  struct pgd_image_info info;

  dir_at (missing, "missing", false);
  dir_at (nodd, "nodd", true);
  cr_assert_lt (pgd_image_check (missing, false, &err), 0);
  expect_msg (&err, missing);
  cr_assert_lt (pgd_image_info (missing, &info, &err), 0);
  cr_assert_eq (err.errnum, ENOENT);
  cr_assert_lt (pgd_image_info (nodd, &info, &err), 0);
  expect_msg (&err, PGD_IMAGE_DD);
  cr_assert_lt (pgd_image_grow (nodd, GiB, &err), 0);
  expect_msg (&err, PGD_IMAGE_DD);
}
