/* SPDX-License-Identifier: GPL-2.0-or-later */
/* pgd_id_valid and pgd_parse_size: the input checks every request goes through. */
#include <criterion/criterion.h>
#include <string.h>

#include "util.h"

static void
assert_id_rejected (const char *id, const char *why)
{
  struct pgd_err err = { 0 };

  cr_assert_not (pgd_id_valid (id, &err), "ID %s (%s) must be rejected", id ? id : "NULL", why);
  cr_assert_neq (err.msg[0], '\0', "rejecting %s must say why", why);
  cr_assert (strstr (err.msg, "invalid ID") != NULL, "message \"%s\" names the ID", err.msg);
}

static void
assert_id_accepted (const char *id)
{
  struct pgd_err err = { 0 };

  cr_assert (pgd_id_valid (id, &err), "ID \"%s\" must be accepted: %s", id, err.msg);
}

Test (id, rejects_empty_and_null)
{
  assert_id_rejected ("", "empty");
  assert_id_rejected (NULL, "NULL");
}

Test (id, rejects_dot_names)
{
  assert_id_rejected (".", "dot");
  assert_id_rejected ("..", "dot-dot");
}

Test (id, rejects_slashes)
{
  assert_id_rejected ("a/b", "slash inside");
  assert_id_rejected ("/", "root");
  assert_id_rejected ("/abc", "leading slash");
  assert_id_rejected ("abc/", "trailing slash");
  assert_id_rejected ("../etc", "escape");
}

Test (id, rejects_control_characters)
{
  assert_id_rejected ("a\nb", "newline");
  assert_id_rejected ("\x01", "SOH");
  assert_id_rejected ("tab\there", "tab");
  assert_id_rejected ("del\x7f", "DEL");
}

Test (id, rejects_too_long)
{
  char id[PGD_ID_MAX + 2];

  memset (id, 'a', PGD_ID_MAX + 1);
  id[PGD_ID_MAX + 1] = '\0';
  cr_assert_eq (strlen (id), 256);
  assert_id_rejected (id, "256 bytes");
}

Test (id, accepts_docker_forms)
{
  const char *hex = "9b0d733a0bc8d1b4e4de1c3b7a5f4b5f2e8c1a0d3f6b7c8d9e0f1a2b3c4d5e6f";
  char init[80];

  cr_assert_eq (strlen (hex), 64);
  assert_id_accepted (hex);
  snprintf (init, sizeof init, "%s-init", hex);
  assert_id_accepted (init);
  assert_id_accepted ("k4w3h8vq2n1m0p9o8i7u6y5t4"); /* BuildKit: 25 alphanumerics */
  cr_assert_eq (strlen ("k4w3h8vq2n1m0p9o8i7u6y5t4"), 25);
}

Test (id, accepts_graphtest_names)
{
  assert_id_accepted ("Base");
  assert_id_accepted ("Snap");
  assert_id_accepted ("empty");
  assert_id_accepted ("ploopTest");
}

Test (id, accepts_odd_but_plain_names)
{
  char id[PGD_ID_MAX + 1];

  assert_id_accepted ("...");
  assert_id_accepted (".hidden");
  assert_id_accepted ("a:b");
  assert_id_accepted ("with space");
  memset (id, 'z', PGD_ID_MAX);
  id[PGD_ID_MAX] = '\0';
  assert_id_accepted (id); /* exactly 255 bytes */
}

static uint64_t
size_ok (const char *s)
{
  struct pgd_err err = { 0 };
  uint64_t v = 0;

  cr_assert_eq (pgd_parse_size (s, &v, &err), 0, "\"%s\" must parse: %s", s, err.msg);
  return v;
}

static void
size_bad (const char *s)
{
  struct pgd_err err = { 0 };
  uint64_t v = 12345;

  cr_assert_eq (pgd_parse_size (s, &v, &err), -1, "\"%s\" must be rejected", s ? s : "NULL");
  cr_assert_neq (err.msg[0], '\0', "rejecting \"%s\" must say why", s ? s : "NULL");
  cr_assert_eq (v, 12345, "a rejected size leaves the output alone");
}

Test (size, plain_bytes)
{
  cr_assert_eq (size_ok ("1048576"), 1048576);
  cr_assert_eq (size_ok ("0"), 0);
  cr_assert_eq (size_ok ("512b"), 512);
}

Test (size, binary_units)
{
  cr_assert_eq (size_ok ("1k"), 1024);
  cr_assert_eq (size_ok ("512M"), 512ULL << 20);
  cr_assert_eq (size_ok ("50M"), 50ULL << 20);
  cr_assert_eq (size_ok ("10G"), 10ULL << 30);
  cr_assert_eq (size_ok ("10g"), 10ULL << 30);
  cr_assert_eq (size_ok ("2T"), 2ULL << 40);
  cr_assert_eq (size_ok ("1P"), 1ULL << 50);
}

Test (size, unit_spellings)
{
  cr_assert_eq (size_ok ("1KiB"), 1024);
  cr_assert_eq (size_ok ("1kb"), 1024);
  cr_assert_eq (size_ok ("1GB"), 1ULL << 30);
  cr_assert_eq (size_ok ("1 G"), 1ULL << 30);
}

Test (size, fractions)
{
  cr_assert_eq (size_ok ("1.5g"), 3ULL << 29);
  cr_assert_eq (size_ok ("0.5k"), 512);
}

Test (size, rejects_garbage)
{
  size_bad ("");
  size_bad (NULL);
  size_bad ("abc");
  size_bad ("G");
  size_bad ("-1");
  size_bad ("-1G");
  size_bad ("10X");
  size_bad ("10GG");
  size_bad ("10Gx");
  size_bad ("inf");
  size_bad ("nan");
}

Test (size, rejects_overflow)
{
  size_bad ("100000P");
  size_bad ("1e30");
}
