/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ploop-snapshotter: containerd's Snapshots service (a proxy snapshotter plugin) on
   the layer store, and the image-server sub-mode ("ploop-snapshotter serve-image ...").
   Under --root: state.json (the store's options), snapshots.json (the snapshots),
   store/ (the layer store's Home: one ploop image per snapshot, mounts under mnt/). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/imgsrv.h"
#include "log.h"
#include "options.h"
#include "service.h"
#include "signals.h"
#include "store/layers.h"
#include "util.h"

#define DEFAULT_SOCKET "/run/ploop-snapshotter/snapshotter.sock"
#define DEFAULT_ROOT "/var/lib/ploop-snapshotter"

/* How long calls in flight may finish after SIGTERM. */
#define SHUTDOWN_GRACE_MS 5000

struct options
{
  const char *socket;
  const char *root;
  const char *engine;
  const char *size;
  const char *blocksize;
  int log_level;
};

static void
usage (FILE *f, const char *prog)
{
  fprintf (f,
           "Usage: %s [OPTION]...\n"
           "       %s serve-image ...\n"
           "Serve containerd's Snapshots service (proxy plugin type \"snapshot\"), storing\n"
           "every snapshot as a ploop image.\n"
           "\n"
           "  --socket PATH      listen here (default " DEFAULT_SOCKET ")\n"
           "  --root DIR         keep snapshots and metadata here (default " DEFAULT_ROOT ")\n"
           "  --size SIZE        filesystem size of a snapshot (default 10G); one snapshot\n"
           "                     gets its own with the label " PGD_SNAP_SIZE_LABEL "=SIZE\n"
           "  --blocksize SIZE   ploop cluster size of new images (default 64K)\n"
           "  --engine ENGINE    auto, user or kernel (default auto)\n"
           "  --log-level LEVEL  error, warn, info or debug (default info)\n"
           "  --help             show this help\n",
           prog, prog);
}

static int
parse_options (int argc, char **argv, struct options *opt)
{
  enum
  {
    OPT_SOCKET = 256,
    OPT_ROOT,
    OPT_SIZE,
    OPT_BLOCKSIZE,
    OPT_ENGINE,
    OPT_LOG_LEVEL,
    OPT_HELP,
  };
  static const struct option longopts[] = {
    { "socket", required_argument, NULL, OPT_SOCKET },
    { "root", required_argument, NULL, OPT_ROOT },
    { "size", required_argument, NULL, OPT_SIZE },
    { "blocksize", required_argument, NULL, OPT_BLOCKSIZE },
    { "engine", required_argument, NULL, OPT_ENGINE },
    { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
    { "help", no_argument, NULL, OPT_HELP },
    { NULL, 0, NULL, 0 },
  };
  int c;

  while ((c = getopt_long (argc, argv, "", longopts, NULL)) != -1)
    switch (c)
      {
      case OPT_SOCKET:
        opt->socket = optarg;
        break;
      case OPT_ROOT:
        opt->root = optarg;
        break;
      case OPT_SIZE:
        opt->size = optarg;
        break;
      case OPT_BLOCKSIZE:
        opt->blocksize = optarg;
        break;
      case OPT_ENGINE:
        if (pgd_opt_engine (argv[0], optarg) < 0)
          return -1;
        opt->engine = optarg;
        break;
      case OPT_LOG_LEVEL:
        if (pgd_opt_log_level (argv[0], optarg, &opt->log_level) < 0)
          return -1;
        break;
      case OPT_HELP:
        usage (stdout, argv[0]);
        exit (EXIT_SUCCESS);
      default:
        usage (stderr, argv[0]);
        return -1;
      }
  if (optind < argc)
    {
      fprintf (stderr, "%s: unexpected argument \"%s\"\n", argv[0], argv[optind]);
      return -1;
    }
  if (opt->root[0] != '/' || strlen (opt->root) > PATH_MAX - 512)
    {
      fprintf (stderr, "%s: --root must be an absolute path\n", argv[0]);
      return -1;
    }
  return 0;
}

/* Open the layer store under ROOT/store with the size, cluster and engine options
   (persisted in ROOT/state.json, so that a restart finds the same store). */
static int
open_store (const struct options *opt, struct pgd_layers **out, struct pgd_err *err)
{
  char state[PATH_MAX], home[PATH_MAX], size[64], bs[64];
  char *opts[2];
  size_t nopts = 0;

  snprintf (state, sizeof state, "%s/state.json", opt->root);
  snprintf (home, sizeof home, "%s/store", opt->root);
  if (opt->size)
    {
      snprintf (size, sizeof size, "ploop.size=%s", opt->size);
      opts[nopts++] = size;
    }
  if (opt->blocksize)
    {
      snprintf (bs, sizeof bs, "ploop.blocksize=%s", opt->blocksize);
      opts[nopts++] = bs;
    }
  /* containerd computes its diffs itself: no change tracker */
  struct pgd_layers_config cfg = { .state_file = state, .engine = opt->engine, .no_tracker = true };
  struct pgd_init_req req = { .home = home, .opts = opts, .nopts = nopts };
  if (pgd_mkdir_p (opt->root, 0700, err) < 0 || pgd_layers_open (out, &cfg, err) < 0)
    return -1;
  if (pgd_layers_ops.init (*out, &req, err) < 0)
    {
      pgd_layers_close (*out);
      return -1;
    }
  return 0;
}

static int
serve (const struct options *opt)
{
  struct pgd_snapshotter sn
      = { .bg_lock = PTHREAD_MUTEX_INITIALIZER, .bg_cond = PTHREAD_COND_INITIALIZER };
  struct pgd_rpc_server *server = NULL;
  cleanup_close int sig_fd = -1;
  struct pgd_err err = { 0 };
  char meta[PATH_MAX];

  snprintf (meta, sizeof meta, "%s/snapshots.json", opt->root);
  if (pgd_stop_signals_install (&sig_fd, &err) < 0)
    goto fail;
  if (open_store (opt, &sn.layers, &err) < 0)
    {
      pgd_error_wrap (&err, "open the layer store");
      goto fail;
    }
  if (pgd_snaps_open (&sn.snaps, meta, &err) < 0)
    {
      pgd_layers_close (sn.layers);
      goto fail;
    }
  pgd_snapshots_restore (&sn);
  pgd_snapshots_sweep (&sn);
  if (pgd_rpc_start (&server, opt->socket, pgd_snapshots_methods, pgd_snapshots_nmethods, &sn, &err)
      < 0)
    {
      pgd_snaps_close (sn.snaps);
      pgd_layers_close (sn.layers);
      goto fail;
    }
  pgd_log (PGD_LOG_INFO, "serving containerd snapshots on %s, root %s", opt->socket, opt->root);

  int signo = pgd_stop_signals_wait (sig_fd);
  pgd_log (PGD_LOG_INFO, "%s: shutting down", strsignal (signo));
  if (!pgd_rpc_stop (server, SHUTDOWN_GRACE_MS))
    _exit (EXIT_SUCCESS); /* calls still use the store: do not free it under them */
  unlink (opt->socket);
  pgd_snapshots_drain (&sn); /* removed snapshots' layers are deleted before exit */
  /* active and view snapshots stay mounted: containers keep running */
  pgd_snaps_close (sn.snaps);
  pgd_layers_close (sn.layers);
  pgd_log (PGD_LOG_INFO, "stopped");
  return EXIT_SUCCESS;

fail:
  pgd_log (PGD_LOG_ERROR, "%s", err.msg);
  return EXIT_FAILURE;
}

int
main (int argc, char **argv)
{
  struct options opt = {
    .socket = DEFAULT_SOCKET,
    .root = DEFAULT_ROOT,
    .engine = "auto",
    .log_level = PGD_LOG_INFO,
  };

  if (argc > 1 && strcmp (argv[1], "serve-image") == 0)
    return pgd_imgsrv_main (argc - 1, argv + 1);
  if (parse_options (argc, argv, &opt) < 0)
    return 2;
  pgd_log_set_level ((enum pgd_log_level)opt.log_level);
  return serve (&opt);
}
