/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The README's "Debugging with curl" block, run as a reader would run it against a
   fresh server (the binary as `make run` starts it, no --home): its socket and Home
   moved into a temporary directory, nothing else changed. Every call must succeed,
   the first must be Init, and nothing may stay mounted. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "leaks.h"
#include "proto_client.h"

#define README_HOME "/var/lib/ploop-demo"

static struct pc_server srv;

static void
setup (void)
{
  cr_assert_eq (pc_start (&srv, false), 0, "the server did not start");
}

static void
teardown (void)
{
  pc_stop (&srv);
}

TestSuite (readme, .init = setup, .fini = teardown);

/* The lines of the first ```sh block after the heading TITLE in README.md, with "S=..."
   pointing at SOCKET and README_HOME replaced by HOME, into OUT. */
static void
extract_block (const char *title, const char *socket, const char *home, char *out, size_t cap)
{
  const char *readme = getenv ("PGD_README") ? getenv ("PGD_README") : "README.md";
  FILE *f = fopen (readme, "r");
  char line[1024];
  int stage = 0; /* 0: before the heading, 1: before the block, 2: inside, 3: done */
  size_t len = 0;

  cr_assert_not_null (f, "open %s (run from the top of the tree or set PGD_README)", readme);
  out[0] = '\0';
  while (stage < 3 && fgets (line, sizeof line, f))
    {
      if (stage == 0 && strncmp (line, title, strlen (title)) == 0)
        stage = 1;
      else if (stage == 1 && strncmp (line, "```sh", 5) == 0)
        stage = 2;
      else if (stage == 2 && strncmp (line, "```", 3) == 0)
        stage = 3;
      else if (stage == 2)
        {
          char fixed[2048];
          const char *at = strstr (line, README_HOME);
          if (strncmp (line, "S=", 2) == 0)
            snprintf (fixed, sizeof fixed, "S='%s'\n", socket);
          else if (at != NULL)
            snprintf (fixed, sizeof fixed, "%.*s%s%s", (int)(at - line), line, home,
                      at + strlen (README_HOME));
          else
            snprintf (fixed, sizeof fixed, "%s", line);
          cr_assert (strstr (fixed, README_HOME) == NULL, "one Home per line: %s", line);
          len += (size_t)snprintf (out + len, cap - len, "%s", fixed);
          cr_assert_lt (len, cap, "the block is too long");
        }
    }
  fclose (f);
  cr_assert_eq (stage, 3, "no complete ```sh block after \"%s\" in %s", title, readme);
}

/* The first word after "GraphDriver." in BLOCK (the first call it makes) into OUT. */
static void
first_call (const char *block, char *out, size_t cap)
{
  const char *p = strstr (block, "GraphDriver.");
  size_t n = 0;

  cr_assert_not_null (p, "the block calls nothing");
  p += strlen ("GraphDriver.");
  while (p[n] && p[n] != ' ' && p[n] != '\'' && p[n] != '?' && p[n] != '\n' && n + 1 < cap)
    n++;
  snprintf (out, cap, "%.*s", (int)n, p);
}

Test (readme, curl_section_runs_on_a_fresh_server)
{
  char block[16384], script[PATH_MAX], work[PATH_MAX], home[PATH_MAX], cmd[4 * PATH_MAX];
  char call[64], found[4096];
  static char output[65536];

  snprintf (home, sizeof home, "%s/demo-home", srv.dir);
  extract_block ("## Debugging with curl", srv.socket, home, block, sizeof block);
  first_call (block, call, sizeof call);
  cr_assert_str_eq (call, "Init",
                    "the curl section must begin with Init (a fresh server "
                    "answers everything else \"driver not initialised\")");

  snprintf (work, sizeof work, "%s/work", srv.dir);
  cr_assert_eq (mkdir (work, 0700), 0);
  snprintf (script, sizeof script, "%s/readme.sh", srv.dir);
  FILE *f = fopen (script, "w");
  cr_assert_not_null (f);
  fputs (block, f);
  cr_assert_eq (fclose (f), 0);

  /* the reader's shell: each command must succeed, a pipe's too */
  snprintf (cmd, sizeof cmd, "cd '%s' && bash -e -o pipefail '%s' 2>&1", work, script);
  FILE *p = popen (cmd, "r");
  cr_assert_not_null (p);
  size_t n = fread (output, 1, sizeof output - 1, p);
  output[n] = '\0';
  int status = pclose (p);
  cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "the block failed (%d):\n%s\n%s",
             status, output, pc_log_tail (&srv));
  cr_assert_null (strstr (output, "\"Err\""), "a call failed:\n%s", output);

  char dir[PATH_MAX + 32];
  snprintf (dir, sizeof dir, "{\"Dir\":\"%s/mnt/box\"}", home);
  cr_assert_not_null (strstr (output, dir), "Get's answer %s missing:\n%s", dir, output);
  cr_assert_not_null (strstr (output, "{\"Size\":6}"), "ApplyDiff's size missing:\n%s", output);
  cr_assert_not_null (strstr (output, "{\"Path\":\"/etc/motd\",\"Kind\":0}"),
                      "Changes missing the changed file:\n%s", output);
  cr_assert_not_null (strstr (output, "etc/motd\n"), "the Diff tar lists no etc/motd:\n%s", output);
  cr_assert_eq (lk_mounts_under (srv.dir, found, sizeof found), 0, "left mounted: %s", found);
  cr_assert_eq (pc_stop (&srv), 0, "the server did not exit cleanly on SIGTERM");
}
