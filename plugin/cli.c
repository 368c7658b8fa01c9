/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Image sub-commands for people: make, clone, grow, check and describe a ploop image,
   and mount or unmount it by hand with the same engines the plugin uses. Each is a
   thin shell around driver/image.c and driver/engine.c. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "engine/engine.h"
#include "log.h"
#include "util.h"

#define CLI_RUN_ROOT "/run/ploop-graphdriver/by-hand"
#define CLI_DEFAULT_CLUSTER (64u * 1024u) /* as the plugin's default */

/* Options shared by the sub-commands; each one reads only those it documents. */
struct cli_opts
{
  const char *engine;
  const char *run_dir;
  const char *mount_opts;
  uint64_t cluster;
  bool ro;
  bool resize;
  bool no_mkfs;
  bool repair;
};

static const char cli_usage[]
    = "Usage: ploop-graphdriver COMMAND [OPTION]... ARG...\n"
      "Work with ploop images by hand (closed images unless said otherwise).\n"
      "\n"
      "  create [--cluster SIZE] [--no-mkfs] DIR SIZE\n"
      "                        new image in the empty or missing DIR, SIZE bytes virtual\n"
      "                        (suffixes K M G T), with ext4 unless --no-mkfs\n"
      "  clone PARENT CHILD    CHILD (empty or missing) shares PARENT's deltas and gets\n"
      "                        its own empty top delta; PARENT becomes read-only for good\n"
      "  grow DIR SIZE         bigger virtual disk; mount --resize grows ext4 to match\n"
      "  check [--repair] DIR  check every delta (--repair: clear in-use first)\n"
      "  allocate DIR          write out the BAT holes of every delta (new deltas are\n"
      "                        thin) for libploop's own tools and the kernel engine\n"
      "  info DIR              size, cluster, chain depth, bytes only this image owns\n"
      "  mount [--ro] [--resize] [--engine auto|user|kernel] [--run-dir D] [-o OPTS]\n"
      "        DIR TARGET      mount the image's ext4 at the existing directory TARGET\n"
      "  umount [--engine E] [--run-dir D] DIR TARGET\n"
      "                        unmount; stops the image server, frees the loop device\n"
      "\n"
      "The user engine keeps its runtime state (server pid, FUSE mount, log) in\n"
      "--run-dir, by default " CLI_RUN_ROOT "/<hash of DIR>; mount and umount must agree.\n";

/* FNV-1a of S: names the default run directory of an image path. */
static uint64_t
fnv1a (const char *s)
{
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* Resolve the image directory DIR into ABS (it must exist) and pick the run directory:
   OPT->run_dir or one derived from ABS, created 0700, into RUN. */
static int
image_paths (const char *dir, const struct cli_opts *opt, char *abs, char *run, struct pgd_err *err)
{
  if (!realpath (dir, abs))
    return pgd_error (err, errno, "image %s", dir);
  if (opt->run_dir)
    snprintf (run, PATH_MAX, "%s", opt->run_dir);
  else
    snprintf (run, PATH_MAX, CLI_RUN_ROOT "/%016" PRIx64, fnv1a (abs));
  return pgd_mkdir_p (run, 0700, err);
}

/* After a clean unmount the default run directory holds only the server's log: drop
   it. A directory the user named is left as it is. */
static void
drop_run_dir (const char *run, const struct cli_opts *opt)
{
  struct pgd_err ignored;
  if (!opt->run_dir && pgd_rm_rf (run, &ignored) < 0)
    fprintf (stderr, "ploop-graphdriver: leaving %s: %s\n", run, ignored.msg);
}

/* Make DIR if it is missing; it must end up an empty directory. */
static int
empty_dir (const char *dir, struct pgd_err *err)
{
  if (pgd_mkdir_p (dir, 0700, err) < 0)
    return -1;
  __attribute__ ((cleanup (pgd_closedirp))) DIR *d = opendir (dir);
  if (!d)
    return pgd_error (err, errno, "open %s", dir);
  struct dirent *de;
  int r = pgd_readdir (d, &de, dir, err);
  if (r < 0)
    return -1;
  if (r > 0)
    return pgd_error (err, ENOTEMPTY, "%s is not empty", dir);
  return 0;
}

static int
cmd_create (char **args, const struct cli_opts *opt, struct pgd_err *err)
{
  uint64_t size;
  if (pgd_parse_size (args[1], &size, err) < 0)
    return -1;
  if (opt->cluster < 4096 || opt->cluster > UINT32_MAX || (opt->cluster & (opt->cluster - 1)))
    return pgd_error (err, EINVAL, "cluster size %" PRIu64 " is not a power of two >= 4K",
                      opt->cluster);
  if (empty_dir (args[0], err) < 0
      || pgd_image_create (args[0], size, (uint32_t)opt->cluster, err) < 0)
    return -1;
  if (opt->no_mkfs)
    return 0;

  /* Format through a private mount of the new image, as the plugin does for its templates. */
  struct pgd_engine e;
  char abs[PATH_MAX], run[PATH_MAX], mnt[PATH_MAX + 8];
  if (pgd_engine_setup (&e, opt->engine, NULL, err) < 0
      || image_paths (args[0], opt, abs, run, err) < 0)
    return -1;
  snprintf (mnt, sizeof mnt, "%s/mkfs", run);
  if (pgd_mkdir_p (mnt, 0700, err) < 0)
    return -1;
  if (pgd_engine_mount (&e, abs, run, mnt, PGD_MOUNT_MKFS, NULL, err) < 0)
    return pgd_error_wrap (err, "format %s", args[0]);
  if (pgd_engine_umount (&e, abs, run, mnt, err) < 0)
    return -1;
  drop_run_dir (run, opt);
  return 0;
}

static int
cmd_clone (char **args, const struct cli_opts *opt, struct pgd_err *err)
{
  (void)opt;
  if (empty_dir (args[1], err) < 0)
    return -1;
  return pgd_image_clone (args[0], args[1], err);
}

static int
cmd_grow (char **args, const struct cli_opts *opt, struct pgd_err *err)
{
  (void)opt;
  uint64_t size;
  if (pgd_parse_size (args[1], &size, err) < 0)
    return -1;
  return pgd_image_grow (args[0], size, err);
}

static int
cmd_check (char **args, const struct cli_opts *opt, struct pgd_err *err)
{
  if (pgd_image_check (args[0], opt->repair, err) < 0)
    return -1;
  printf ("%s: ok\n", args[0]);
  return 0;
}

static int
cmd_allocate (char **args, const struct cli_opts *opt, struct pgd_err *err)
{
  uint64_t filled;
  (void)opt;
  if (pgd_image_allocate (args[0], &filled, err) < 0)
    return -1;
  printf ("%s: %" PRIu64 " bytes of BAT written out\n", args[0], filled);
  return 0;
}

static int
cmd_info (char **args, const struct cli_opts *opt, struct pgd_err *err)
{
  (void)opt;
  struct pgd_image_info info;
  if (pgd_image_info (args[0], &info, err) < 0)
    return -1;
  printf ("size %" PRIu64 "\ncluster %" PRIu32 "\ndeltas %u\ntop %s\ntop_shared %s\n"
          "own_bytes %" PRIu64 "\n",
          info.virtual_size, info.cluster_size, info.ndeltas, info.top_file,
          info.top_shared ? "yes" : "no", info.own_bytes);
  return 0;
}

/* TARGET as an absolute path into BUF (mountinfo, which the engine reads, has only those). */
static int
target_path (const char *target, char *buf, struct pgd_err *err)
{
  if (!realpath (target, buf))
    return pgd_error (err, errno, "target %s", target);
  return 0;
}

static int
cmd_mount (char **args, const struct cli_opts *opt, struct pgd_err *err)
{
  struct pgd_engine e;
  char abs[PATH_MAX], run[PATH_MAX], target[PATH_MAX];
  if (pgd_engine_setup (&e, opt->engine, NULL, err) < 0 || target_path (args[1], target, err) < 0
      || image_paths (args[0], opt, abs, run, err) < 0)
    return -1;
  unsigned flags = (opt->ro ? PGD_MOUNT_RO : 0) | (opt->resize ? PGD_MOUNT_RESIZE : 0);
  return pgd_engine_mount (&e, abs, run, target, flags, opt->mount_opts, err);
}

static int
cmd_umount (char **args, const struct cli_opts *opt, struct pgd_err *err)
{
  struct pgd_engine e;
  char abs[PATH_MAX], run[PATH_MAX], target[PATH_MAX];
  if (pgd_engine_setup (&e, opt->engine, NULL, err) < 0 || target_path (args[1], target, err) < 0
      || image_paths (args[0], opt, abs, run, err) < 0)
    return -1;
  if (pgd_engine_umount (&e, abs, run, target, err) < 0)
    return -1;
  drop_run_dir (run, opt);
  return 0;
}

struct cli_cmd
{
  const char *name;
  int nargs;
  int (*fn) (char **args, const struct cli_opts *opt, struct pgd_err *err);
};

static const struct cli_cmd cli_cmds[] = {
  { "create", 2, cmd_create }, { "clone", 2, cmd_clone },       { "grow", 2, cmd_grow },
  { "check", 1, cmd_check },   { "info", 1, cmd_info },         { "mount", 2, cmd_mount },
  { "umount", 2, cmd_umount }, { "allocate", 1, cmd_allocate },
};

bool
pgd_cli_is_command (const char *name)
{
  for (size_t i = 0; i < sizeof cli_cmds / sizeof cli_cmds[0]; i++)
    if (strcmp (cli_cmds[i].name, name) == 0)
      return true;
  return false;
}

int
pgd_cli_main (int argc, char **argv)
{
  enum
  {
    O_CLUSTER = 256,
    O_NO_MKFS,
    O_REPAIR,
    O_RO,
    O_RESIZE,
    O_ENGINE,
    O_RUN_DIR,
    O_HELP,
  };
  static const struct option longopts[] = {
    { "cluster", required_argument, NULL, O_CLUSTER },
    { "no-mkfs", no_argument, NULL, O_NO_MKFS },
    { "repair", no_argument, NULL, O_REPAIR },
    { "ro", no_argument, NULL, O_RO },
    { "resize", no_argument, NULL, O_RESIZE },
    { "engine", required_argument, NULL, O_ENGINE },
    { "run-dir", required_argument, NULL, O_RUN_DIR },
    { "help", no_argument, NULL, O_HELP },
    { NULL, 0, NULL, 0 },
  };
  struct cli_opts opt = { .engine = "auto", .cluster = CLI_DEFAULT_CLUSTER };
  struct pgd_err err = { 0 };
  const struct cli_cmd *cmd = NULL;
  int c;

  for (size_t i = 0; i < sizeof cli_cmds / sizeof cli_cmds[0]; i++)
    if (strcmp (cli_cmds[i].name, argv[0]) == 0)
      cmd = &cli_cmds[i];
  if (!cmd)
    {
      fputs (cli_usage, stderr);
      return 2;
    }
  while ((c = getopt_long (argc, argv, "o:", longopts, NULL)) != -1)
    switch (c)
      {
      case O_CLUSTER:
        if (pgd_parse_size (optarg, &opt.cluster, &err) < 0)
          goto fail;
        break;
      case O_NO_MKFS:
        opt.no_mkfs = true;
        break;
      case O_REPAIR:
        opt.repair = true;
        break;
      case O_RO:
        opt.ro = true;
        break;
      case O_RESIZE:
        opt.resize = true;
        break;
      case O_ENGINE:
        opt.engine = optarg;
        break;
      case O_RUN_DIR:
        opt.run_dir = optarg;
        break;
      case 'o':
        opt.mount_opts = optarg;
        break;
      case O_HELP:
        fputs (cli_usage, stdout);
        return 0;
      default:
        fputs (cli_usage, stderr);
        return 2;
      }
  if (argc - optind != cmd->nargs)
    {
      fprintf (stderr, "ploop-graphdriver %s: takes %d argument%s\n%s", cmd->name, cmd->nargs,
               cmd->nargs == 1 ? "" : "s", cli_usage);
      return 2;
    }
  if (cmd->fn (argv + optind, &opt, &err) == 0)
    return 0;
fail:
  fprintf (stderr, "ploop-graphdriver %s: %s\n", cmd->name, err.msg);
  return 1;
}
