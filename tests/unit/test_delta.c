/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Delta header validation (PLOOP.md §1.1) and the in-use flag. */
#include "ploop_fixture.h"

#include "engine/delta.h"

static char dir[PATH_MAX];

static void
setup (void)
{
  fx_tmpdir (dir, sizeof dir, "delta");
}

static void
teardown (void)
{
  fx_sh ("rm -rf '%s'", dir);
}

TestSuite (delta, .init = setup, .fini = teardown);

static void
good_header (struct pgd_delta_hdr *h, unsigned char *raw)
{
  memset (h, 0, sizeof *h);
  h->version = 1;
  h->cluster_sectors = 64;
  h->bat_entries = 32768;
  h->size_sectors = 32768ULL * 64;
  h->first_block_sectors = 320;
  h->flags = PGD_DELTA_CIF_EMPTY;
  pgd_delta_hdr_encode (h, raw);
}

static void
expect_bad (const unsigned char *raw, uint64_t file_size, const char *what, const char *msg)
{
  struct pgd_delta_hdr h;
  struct pgd_err err = { 0 };

  cr_expect_eq (pgd_delta_hdr_parse (raw, file_size, "t", &h, &err), -1, "%s accepted", what);
  cr_expect_not_null (strstr (err.msg, msg), "%s: message \"%s\" lacks \"%s\"", what, err.msg, msg);
}

Test (delta, header_checks)
{
  struct pgd_delta_hdr h, out;
  struct pgd_err err = { 0 };
  unsigned char raw[64], bad[64];
  const uint64_t fsz = 320 * 512;

  good_header (&h, raw);
  cr_assert_eq (pgd_delta_hdr_parse (raw, fsz, "t", &out, &err), 0, "%s", err.msg);
  cr_expect_eq (out.version, 1);
  cr_expect_eq (out.cluster_sectors, 64);
  cr_expect_eq (out.bat_entries, 32768);
  cr_expect_eq (out.size_sectors, 32768ULL * 64);

  memcpy (bad, raw, 64);
  memcpy (bad, "WithoutFreeSpacX", 16);
  expect_bad (bad, fsz, "signature", "wrong signature");

  memcpy (bad, raw, 64);
  bad[16] = 3;
  expect_bad (bad, fsz, "type", "wrong type");

  static const uint32_t bad_clusters[] = { 0, 32, 100, 96, 262144 };
  for (size_t i = 0; i < sizeof bad_clusters / sizeof *bad_clusters; i++)
    {
      struct pgd_delta_hdr b = h;
      b.cluster_sectors = bad_clusters[i];
      pgd_delta_hdr_encode (&b, bad);
      expect_bad (bad, fsz, "cluster size", "wrong cluster size");
    }

  static const uint32_t bad_fbo[] = { 0, 100, 321 };
  for (size_t i = 0; i < sizeof bad_fbo / sizeof *bad_fbo; i++)
    {
      struct pgd_delta_hdr b = h;
      b.first_block_sectors = bad_fbo[i];
      pgd_delta_hdr_encode (&b, bad);
      expect_bad (bad, fsz, "first block offset", "wrong first block offset");
    }

  /* BAT (128 KiB + 64 B) does not fit before a first block at 128 KiB */
  struct pgd_delta_hdr b = h;
  b.first_block_sectors = 256;
  pgd_delta_hdr_encode (&b, bad);
  expect_bad (bad, fsz, "BAT size", "does not fit");

  /* v1 size field is 32 bits */
  memcpy (bad, raw, 64);
  bad[40] = 1;
  expect_bad (bad, fsz, "v1 high size bits", "high bits");

  /* virtual size larger than the BAT covers */
  b = h;
  b.size_sectors = 32768ULL * 64 + 1;
  pgd_delta_hdr_encode (&b, bad);
  expect_bad (bad, fsz, "size vs BAT", "does not match");

  expect_bad (raw, fsz - 512, "short file", "shorter than its header");

  b = h;
  b.flags |= PGD_DELTA_CIF_CONVERT;
  pgd_delta_hdr_encode (&b, bad);
  expect_bad (bad, fsz, "conversion flag", "conversion");

  /* v2 takes a 64-bit size */
  b = h;
  b.version = 2;
  pgd_delta_hdr_encode (&b, bad);
  cr_expect_eq (pgd_delta_hdr_parse (bad, fsz, "t", &out, &err), 0, "%s", err.msg);
  cr_expect_eq (out.version, 2);
}

Test (delta, libploop_header_accepted_and_in_use_refused)
{
  char path[PATH_MAX];
  struct pgd_delta d, d2;
  struct pgd_err err = { 0 };

  fx_create_image (dir, 1ULL << 30, 64);
  snprintf (path, sizeof path, "%s/root.hdd", dir);
  cr_assert_eq (pgd_delta_open (&d, path, PGD_DELTA_RW, &err), 0, "%s", err.msg);
  /* PLOOP.md §1.2: 32 KiB clusters, 1 GiB: 5 header clusters, 160 KiB file */
  cr_expect_eq (d.h.first_block_sectors, 320);
  cr_expect_eq (d.header_clusters, 5);
  cr_expect_eq (d.file_size, 160 * 1024);
  cr_expect (d.h.flags & PGD_DELTA_CIF_EMPTY);
  cr_assert_eq (pgd_delta_write_header (&d, PGD_DELTA_IN_USE, d.h.flags, &err), 0, "%s", err.msg);

  cr_expect_eq (pgd_delta_open (&d2, path, PGD_DELTA_RW, &err), -1);
  cr_expect_eq (err.errnum, EBUSY);
  cr_expect_eq (pgd_delta_open (&d2, path, 0, &err), -1);
  cr_expect_eq (pgd_delta_open (&d2, path, PGD_DELTA_ALLOW_IN_USE, &err), 0, "%s", err.msg);
  pgd_delta_close (&d2);
  /* the rest of the world agrees it is in use */
  cr_expect_eq (fx_sh ("qemu-img check -f parallels '%s' >/dev/null 2>&1", path), 2);

  cr_assert_eq (pgd_delta_write_header (&d, 0, d.h.flags, &err), 0, "%s", err.msg);
  pgd_delta_close (&d);
  cr_expect (fx_qemu_check_ok (path));
  cr_expect_eq (fx_sh (FX_PLOOP_ENV "ploop check -f -c -r '%s' >/dev/null 2>&1", path), 0);
}

static void
count_visit (void *ctx, uint32_t vc, uint64_t cluster)
{
  (void)vc;
  (void)cluster;
  (*(int *)ctx)++;
}

Test (delta, corrupt_bat_entries_rejected)
{
  char path[PATH_MAX];
  struct pgd_delta d;
  struct pgd_err err = { 0 };
  int fd, n = 0;
  uint32_t e;

  fx_create_image (dir, 64ULL << 20, 64);
  snprintf (path, sizeof path, "%s/root.hdd", dir);
  fd = open (path, O_RDWR);
  cr_assert_geq (fd, 0);
  /* one valid cluster at file cluster 1 (the header is one 32 KiB cluster) */
  cr_assert_eq (ftruncate (fd, 2 * 32768), 0);
  e = 64;
  cr_assert_eq (pwrite (fd, &e, 4, 64 + 4 * 3), 4);
  cr_assert_eq (pgd_delta_open (&d, path, 0, &err), 0, "%s", err.msg);
  cr_expect_eq (pgd_delta_scan_bat (&d, count_visit, &n, &err), 0, "%s", err.msg);
  cr_expect_eq (n, 1);
  pgd_delta_close (&d);

  static const struct
  {
    uint32_t entry;
    const char *msg;
  } bad[] = { { 65, "not cluster aligned" },
              { 0 + 64 * 0 + 64 * 2, "beyond the end" },
              { 64, "more than once" } };
  for (size_t i = 0; i < 3; i++)
    {
      e = bad[i].entry;
      cr_assert_eq (pwrite (fd, &e, 4, 64 + 4 * 7), 4);
      cr_assert_eq (pgd_delta_open (&d, path, 0, &err), 0, "%s", err.msg);
      cr_expect_eq (pgd_delta_scan_bat (&d, count_visit, &n, &err), -1, "entry %u accepted", e);
      cr_expect_not_null (strstr (err.msg, bad[i].msg), "%s", err.msg);
      pgd_delta_close (&d);
    }
  close (fd);

  /* 1 GiB with 32 KiB clusters: 5 header clusters; cluster 1 is header */
  fx_sh ("rm -f '%s'/root.hdd '%s'/" FX_DD, dir, dir);
  fx_create_image (dir, 1ULL << 30, 64);
  fd = open (path, O_RDWR);
  cr_assert_geq (fd, 0);
  cr_assert_eq (ftruncate (fd, 6 * 32768), 0);
  e = 64;
  cr_assert_eq (pwrite (fd, &e, 4, 64), 4);
  close (fd);
  cr_assert_eq (pgd_delta_open (&d, path, 0, &err), 0, "%s", err.msg);
  cr_expect_eq (pgd_delta_scan_bat (&d, count_visit, &n, &err), -1);
  cr_expect_not_null (strstr (err.msg, "into the header"), "%s", err.msg);
  pgd_delta_close (&d);
}
