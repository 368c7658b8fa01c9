/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A damaged state file at start (issue #17): truncated, garbage, or a field of the
   wrong type. The store must open (no exit, no crash), keep the file aside for a
   person, answer "not initialised" and take the next Init as on a first start. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/layers.h"
#include "store_fixture.h"
#include "util.h"

static const struct pgd_ops *ops = &pgd_layers_ops;
static struct tl_store S;

static void
setup (void)
{
  tl_store_prepare (&S, "state");
}

static void
teardown (void)
{
  struct pgd_err err;
  if (pgd_rm_rf (S.tmp, &err) < 0)
    fprintf (stderr, "cleanup: %s\n", err.msg);
}

TestSuite (state, .init = setup, .fini = teardown, .timeout = 120);

/* The name of the one "state.json.damaged-*" file in tmp into OUT; false if none. */
static bool
find_aside (char *out)
{
  DIR *d = opendir (S.tmp);
  struct dirent *de;
  int n = 0;

  cr_assert_not_null (d);
  while ((de = readdir (d)) != NULL)
    if (strncmp (de->d_name, "state.json.damaged-", 19) == 0)
      {
        snprintf (out, PATH_MAX, "%s/%s", S.tmp, de->d_name);
        n++;
      }
  closedir (d);
  cr_assert_leq (n, 1);
  return n == 1;
}

static const char *const damaged[] = {
  "{\"Home\":\"/var/lib/x\",\"Opts\":[",          /* truncated */
  "\x01\x02garbage\xff",                          /* not JSON */
  "",                                             /* empty */
  "[\"Home\"]",                                   /* not an object */
  "{\"Home\":5}",                                 /* Home of the wrong type */
  "{\"Opts\":[]}",                                /* no Home */
  "{\"Home\":\"%s\",\"Opts\":[5]}",               /* crashed the plugin */
  "{\"Home\":\"%s\",\"Opts\":\"ploop.size=1G\"}", /* Opts not an array */
  "{\"Home\":\"%s\",\"UIDMaps\":[{\"container_id\":\"0\",\"host_id\":1,\"size\":1}]}",
  "{\"Home\":\"%s\",\"GIDMaps\":[{\"container_id\":0,\"host_id\":-1,\"size\":1}]}",
  "{\"Home\":\"%s\",\"UIDMaps\":[7]}",
  "{\"Home\":\"%s\",\"Opts\":[\"ploop.bogus=1\"]}", /* an option Init refuses */
  "{\"Home\":\"relative/home\"}",
};

ParameterizedTestParameters (state, damaged_file_is_moved_aside)
{
  static int idx[sizeof damaged / sizeof *damaged];
  for (size_t i = 0; i < sizeof idx / sizeof *idx; i++)
    idx[i] = (int)i;
  return cr_make_param_array (int, idx, sizeof idx / sizeof *idx);
}

ParameterizedTest (int *i, state, damaged_file_is_moved_aside)
{
  char text[PATH_MAX * 2], aside[PATH_MAX];
  struct pgd_err err = { 0 };
  struct pgd_layers *l = NULL;
  struct pgd_kvlist kv = { 0 };

  snprintf (text, sizeof text, damaged[*i], S.home);
  cr_assert_eq (pgd_write_file_atomic (S.state, text, strlen (text), &err), 0, "%s", err.msg);
  struct pgd_layers_config cfg = { .state_file = S.state, .engine = "user", .exe = S.exe };
  cr_assert_eq (pgd_layers_open (&l, &cfg, &err), 0, "case %d: open: %s", *i, err.msg);

  /* kept aside, byte for byte; no state file left to trip the next start */
  cr_assert (find_aside (aside), "case %d: no state.json.damaged-* file", *i);
  cr_assert_neq (access (S.state, F_OK), 0, "case %d: the damaged file is still in place", *i);
  cleanup_free char *kept = NULL;
  size_t len = 0;
  cr_assert_eq (pgd_read_file (aside, &kept, &len, &err), 0, "%s", err.msg);
  cr_assert_eq (len, strlen (text));
  cr_assert_eq (memcmp (kept, text, len), 0, "case %d: the kept copy differs", *i);

  /* waits for Init: requests get the clear "not initialised" error */
  cr_assert_eq (ops->status (l, &kv, &err), -1, "case %d: status answered", *i);
  cr_assert (strstr (err.msg, "not initialised"), "case %d: %s", *i, err.msg);

  /* then Init works as on a first start, and writes a good state file */
  struct pgd_init_req req = { .home = S.home };
  cr_assert_eq (ops->init (l, &req, &err), 0, "case %d: init: %s", *i, err.msg);
  cr_assert_eq (ops->status (l, &kv, &err), 0, "case %d: status: %s", *i, err.msg);
  pgd_kvlist_free (&kv);
  pgd_layers_close (l);
  l = NULL;
  cr_assert_eq (pgd_layers_open (&l, &cfg, &err), 0, "case %d: reopen: %s", *i, err.msg);
  cr_assert_eq (ops->status (l, &kv, &err), 0, "case %d: not resumed: %s", *i, err.msg);
  pgd_kvlist_free (&kv);
  pgd_layers_close (l);
}
