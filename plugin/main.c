/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ploop-graphdriver: the Docker GraphDriver plugin server, and the image-server
   sub-mode ("ploop-graphdriver serve-image ..."). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "engine/engine.h"
#include "engine/imgsrv.h"
#include "log.h"
#include "options.h"
#include "server.h"
#include "signals.h"
#include "store/layers.h"
#include "supervise.h"
#include "util.h"

#define DEFAULT_SOCKET "/run/docker/plugins/ploop.sock"
#define DEFAULT_STATE "/var/lib/ploop-graphdriver/state.json"

/* How long requests in flight may finish after SIGTERM; then Diff streams are cut and
   get PGD_STREAM_CUT_MS more (5 + 2 s: dockerd SIGKILLs after 10 s). */
#define SHUTDOWN_GRACE_MS 5000

/* Long enough for dockerd's Put-then-Get pairs (create then start, stop then diff),
   short enough that an unused layer soon gives its image server and loop device back. */
#define PGD_LINGER_DEFAULT_MS 2000u

struct options
{
  const char *socket;
  const char *state;
  const char *home;
  const char *engine;
  int log_level;
  unsigned linger_ms;
  unsigned stall_ms;
  bool supervise;
};

static void
usage (FILE *f, const char *prog)
{
  fprintf (f,
           "Usage: %s [OPTION]...\n"
           "       %s create|clone|grow|check|info|mount|umount ... (--help)\n"
           "       %s serve-image ...\n"
           "Serve Docker's GraphDriver plugin protocol, storing layers as ploop images.\n"
           "\n"
           "  --socket PATH      listen here (default " DEFAULT_SOCKET ");\n"
           "                     a socket passed by systemd (LISTEN_FDS) takes precedence\n"
           "  --state FILE       where Init is persisted (default " DEFAULT_STATE ")\n"
           "  --home DIR         serve this Home at once, without waiting for Init\n"
           "  --engine ENGINE    auto, user or kernel (default auto)\n"
           "  --log-level LEVEL  error, warn, info or debug (default info)\n"
           "  --linger MS        keep a layer mounted MS milliseconds after its last Put,\n"
           "                     so that a Get soon after reuses it (default %u; 0: never)\n"
           "  --server-stall MS  an image server that makes no progress for MS milliseconds\n"
           "                     while a request waits on it is declared dead: killed, its\n"
           "                     FUSE connection aborted (default %u; 0: wait forever)\n"
           "  --supervise        run the plugin as a child, restarted when it dies, image\n"
           "                     servers kept (the managed plugin's PID 1)\n"
           "  --help             show this help\n",
           prog, prog, prog, PGD_LINGER_DEFAULT_MS, PGD_SERVER_STALL_MS);
}

/* Parse the command line into OPT; returns -1 (message printed) on a usage error. */
static int
parse_options (int argc, char **argv, struct options *opt)
{
  enum
  {
    OPT_SOCKET = 256,
    OPT_STATE,
    OPT_HOME,
    OPT_ENGINE,
    OPT_LOG_LEVEL,
    OPT_LINGER,
    OPT_STALL,
    OPT_SUPERVISE,
    OPT_HELP,
  };
  static const struct option longopts[] = {
    { "socket", required_argument, NULL, OPT_SOCKET },
    { "state", required_argument, NULL, OPT_STATE },
    { "home", required_argument, NULL, OPT_HOME },
    { "engine", required_argument, NULL, OPT_ENGINE },
    { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
    { "linger", required_argument, NULL, OPT_LINGER },
    { "server-stall", required_argument, NULL, OPT_STALL },
    { "supervise", no_argument, NULL, OPT_SUPERVISE },
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
      case OPT_STATE:
        opt->state = optarg;
        break;
      case OPT_HOME:
        opt->home = optarg;
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
      case OPT_LINGER:
        {
          char *end;
          errno = 0;
          unsigned long ms = strtoul (optarg, &end, 10);
          if (errno || end == optarg || *end || optarg[0] == '-' || ms > 600000)
            {
              fprintf (stderr, "%s: --linger must be milliseconds from 0 to 600000\n", argv[0]);
              return -1;
            }
          opt->linger_ms = (unsigned)ms;
          break;
        }
      case OPT_STALL:
        {
          char *end;
          errno = 0;
          unsigned long ms = strtoul (optarg, &end, 10);
          if (errno || end == optarg || *end || optarg[0] == '-' || ms > 3600000)
            {
              fprintf (stderr, "%s: --server-stall must be milliseconds from 0 to 3600000\n",
                       argv[0]);
              return -1;
            }
          opt->stall_ms = (unsigned)ms;
          break;
        }
      case OPT_SUPERVISE:
        opt->supervise = true;
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
      usage (stderr, argv[0]);
      return -1;
    }
  if (opt->home && opt->home[0] != '/')
    {
      fprintf (stderr, "%s: --home must be an absolute path\n", argv[0]);
      return -1;
    }
  return 0;
}

/* The listening socket: systemd's when socket-activated (*OWN false: systemd owns the
   file), else our own at PATH (*OWN true, FILE filled: we remove it at exit). */
static int
open_listener (const char *path, int *fd, struct pgd_socket_file *file, bool *own,
               struct pgd_err *err)
{
  int rc = pgd_server_activated_fd (fd, err);

  *own = false;
  if (rc < 0)
    return -1;
  if (rc > 0)
    {
      pgd_log (PGD_LOG_INFO, "serving the socket passed by systemd (fd %d)", *fd);
      return 0;
    }
  if (pgd_server_bind_unix (path, file, fd, err) < 0)
    return -1;
  *own = true;
  pgd_log (PGD_LOG_INFO, "listening on %s", path);
  return 0;
}

static int
serve (const struct options *opt)
{
  struct pgd_layers_config cfg = {
    .state_file = opt->state,
    .home = opt->home,
    .engine = opt->engine,
    .linger_ms = opt->linger_ms,
    .stall_ms = opt->stall_ms,
  };
  struct pgd_layers *layers = NULL;
  struct pgd_server *server = NULL;
  cleanup_close int sig_fd = -1;
  struct pgd_socket_file sock_file;
  struct pgd_err err = { 0 };
  bool own_socket = false;
  int listen_fd = -1;
  int signo;

  if (pgd_stop_signals_install (&sig_fd, &err) < 0)
    goto fail;
  /* listen before the (possibly slow) store start: early clients wait in the backlog */
  if (open_listener (opt->socket, &listen_fd, &sock_file, &own_socket, &err) < 0)
    goto fail;
  if (pgd_layers_open (&layers, &cfg, &err) < 0)
    {
      close (listen_fd);
      pgd_error_wrap (&err, "open the layer store");
      goto fail;
    }
  if (pgd_server_start (&server, listen_fd, &pgd_layers_ops, layers, &err) < 0)
    {
      pgd_layers_close (layers);
      goto fail;
    }
  pgd_log (PGD_LOG_INFO, "ready");

  signo = pgd_stop_signals_wait (sig_fd);
  pgd_log (PGD_LOG_INFO, "%s: shutting down", strsignal (signo));
  bool stopped = pgd_server_stop (server, SHUTDOWN_GRACE_MS);
  /* no one listens any more: a client now gets "no such file", not "refused" */
  if (own_socket)
    pgd_server_unlink_unix (&sock_file);
  pgd_layers_shutdown (layers);
  if (!stopped)
    _exit (EXIT_SUCCESS); /* threads still use the store: do not free it under them */
  pgd_layers_close (layers);
  pgd_log (PGD_LOG_INFO, "stopped");
  return EXIT_SUCCESS;

fail:
  if (own_socket)
    pgd_server_unlink_unix (&sock_file);
  pgd_log (PGD_LOG_ERROR, "%s", err.msg);
  return EXIT_FAILURE;
}

int
main (int argc, char **argv)
{
  struct options opt = {
    .socket = DEFAULT_SOCKET,
    .state = DEFAULT_STATE,
    .engine = "auto",
    .log_level = PGD_LOG_INFO,
    .linger_ms = PGD_LINGER_DEFAULT_MS,
    .stall_ms = PGD_SERVER_STALL_MS,
  };

  if (argc > 1 && strcmp (argv[1], "serve-image") == 0)
    return pgd_imgsrv_main (argc - 1, argv + 1);
  if (argc > 1 && pgd_cli_is_command (argv[1]))
    return pgd_cli_main (argc - 1, argv + 1);
  if (parse_options (argc, argv, &opt) < 0)
    return 2;
  pgd_log_set_level ((enum pgd_log_level)opt.log_level);
  if (opt.supervise)
    return pgd_supervise (argc, argv);
  return serve (&opt);
}
