/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Who may touch the plugin, against the real binary: the legacy socket is 0600 and
   owned by root; Home (with every layer image, delta and mounted root below it) and
   the state file are out of other users' reach, checked by mode and by trying as
   nobody; with user-namespace maps only the remapped root may traverse to a container's
   root; the managed plugin's config.json asks for CAP_SYS_ADMIN and the two devices
   the user engine opens, nothing else. Needs root, FUSE and loop devices. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "leaks.h"
#include "proto_client.h"

#define NOBODY 65534
#define REMAP_BASE 100000 /* host ID of container root in the userns test */
#define MAX_PATHS 4096
#define MSG_LEN 4096

static struct pc_server srv;

static void
setup (void)
{
  signal (SIGPIPE, SIG_IGN);
  /* no --home: the Home and the state file come from Init, as with dockerd */
  cr_assert_eq (pc_start (&srv, false), 0, "the server did not start");
  /* the test directory is 0700 (mkdtemp); open it so that only the modes under test
     stand between another user and the socket, Home and the state file */
  cr_assert_eq (chmod (srv.dir, 0711), 0);
}

static void
teardown (void)
{
  pc_stop (&srv);
}

TestSuite (access, .init = setup, .fini = teardown);

/* A test of this suite: BODY, then the server must exit 0 on SIGTERM. */
#define ACCESS_TEST(name)                                                                          \
  static void name##_body (void);                                                                  \
  Test (access, name)                                                                              \
  {                                                                                                \
    name##_body ();                                                                                \
    cr_assert_eq (pc_stop (&srv), 0, "the server did not exit cleanly on SIGTERM");                \
  }                                                                                                \
  static void name##_body (void)

/* ---- requests ------------------------------------------------------------------------- */

static void
call_ok (const char *path, const char *body)
{
  struct pc_response r;

  cr_assert_eq (pc_post (&srv, path, body, &r), 0, "POST %s: no response", path);
  cr_assert_eq (r.status, 200, "%s %s: %d %s\n%s", path, body, r.status, r.body ? r.body : "",
                pc_log_tail (&srv));
  pc_response_free (&r);
}

static void
init (const char *maps)
{
  char body[PATH_MAX + 512];

  snprintf (body, sizeof body, "{\"Home\":\"%s\",\"Opts\":null,\"UIDMaps\":%s,\"GIDMaps\":%s}\n",
            srv.home, maps, maps);
  call_ok ("/GraphDriver.Init", body);
}

/* Create BASE, CHILD on it, and mount CHILD (Get) with a world-readable file in it:
   every kind of object the store keeps then exists below Home. Its Dir goes to DIR. */
static void
populate (char *dir)
{
  struct pc_response r;
  char path[PATH_MAX + 16];
  const char *d;

  call_ok ("/GraphDriver.Create", "{\"ID\":\"base\"}\n");
  call_ok ("/GraphDriver.CreateReadWrite", "{\"ID\":\"child\",\"Parent\":\"base\"}\n");
  cr_assert_eq (pc_post (&srv, "/GraphDriver.Get", "{\"ID\":\"child\"}\n", &r), 0);
  cr_assert_eq (r.status, 200, "Get: %d %s", r.status, r.body);
  d = pc_json_str (&r, "Dir");
  cr_assert_not_null (d, "Get: no Dir in %s", r.body);
  snprintf (dir, PATH_MAX, "%s", d);
  pc_response_free (&r);
  snprintf (path, sizeof path, "%s/world-readable", dir);
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  cr_assert_geq (fd, 0, "create %s", path);
  cr_assert_eq (write (fd, "x\n", 2), 2);
  cr_assert_eq (close (fd), 0);
  cr_assert_eq (chmod (path, 0644), 0);
}

/* ---- trying as another user ----------------------------------------------------------- */

typedef int (*probe_fn) (const void *ctx, char *msg, size_t cap);

/* Run PROBE in a child process with UID and GID and no supplementary groups: 0 when it
   returned 0; otherwise its message is in MSG. */
static int
as_user (uid_t uid, gid_t gid, probe_fn probe, const void *ctx, char *msg, size_t cap)
{
  int pfd[2], status;
  pid_t pid;
  ssize_t n;

  cr_assert_eq (pipe2 (pfd, O_CLOEXEC), 0);
  pid = fork ();
  cr_assert_geq (pid, 0);
  if (pid == 0)
    {
      char m[MSG_LEN] = "";
      int rc;
      close (pfd[0]);
      if (setgroups (0, NULL) < 0 || setgid (gid) < 0 || setuid (uid) < 0)
        {
          snprintf (m, sizeof m, "cannot become %u:%u: %s", uid, gid, strerror (errno));
          rc = 2;
        }
      else
        rc = probe (ctx, m, sizeof m) == 0 ? 0 : 1;
      (void)!write (pfd[1], m, strlen (m));
      _exit (rc);
    }
  close (pfd[1]);
  n = read (pfd[0], msg, cap - 1);
  msg[n > 0 ? n : 0] = '\0';
  close (pfd[0]);
  cr_assert_eq (waitpid (pid, &status, 0), pid);
  cr_assert (WIFEXITED (status), "the probe as %u:%u crashed", uid, gid);
  cr_assert_neq (WEXITSTATUS (status), 2, "%s", msg);
  return WEXITSTATUS (status) == 0 ? 0 : -1;
}

/* What a refused call must look like: -1 with EACCES. */
static const char *
outcome (int rc)
{
  return rc == 0 ? "allowed" : strerror (errno);
}

static bool
denied (int rc)
{
  return rc < 0 && errno == EACCES;
}

/* PATH must be refused: stat, then open for reading (a directory: its listing). */
static int
refused (const char *path, char *msg, size_t cap)
{
  struct stat st;
  int rc, fd;

  rc = stat (path, &st);
  if (!denied (rc))
    {
      snprintf (msg, cap, "stat %s: %s", path, outcome (rc));
      return -1;
    }
  fd = open (path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  rc = fd < 0 ? -1 : 0;
  if (!denied (rc))
    {
      snprintf (msg, cap, "open %s: %s", path, outcome (rc));
      if (fd >= 0)
        close (fd);
      return -1;
    }
  return 0;
}

static int
probe_connect (const void *ctx, char *msg, size_t cap)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int rc;

  snprintf (sa.sun_path, sizeof sa.sun_path, "%s", (const char *)ctx);
  rc = connect (fd, (struct sockaddr *)&sa, sizeof sa);
  if (!denied (rc))
    {
      snprintf (msg, cap, "connect %s: %s", sa.sun_path, outcome (rc));
      return -1;
    }
  return 0;
}

/* CTX (a file, or a directory to list) cannot be opened for reading; its parent is
   searchable, so it can be stat'ed. */
static int
probe_unreadable (const void *ctx, char *msg, size_t cap)
{
  int fd = open (ctx, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  int rc = fd < 0 ? -1 : 0;

  if (fd >= 0)
    close (fd);
  if (!denied (rc))
    {
      snprintf (msg, cap, "open %s: %s", (const char *)ctx, outcome (rc));
      return -1;
    }
  return 0;
}

/* Every path of the NULL-terminated list CTX must be refused. */
static int
probe_all_refused (const void *ctx, char *msg, size_t cap)
{
  for (char *const *p = ctx; *p; p++)
    if (refused (*p, msg, cap) < 0)
      return -1;
  return 0;
}

/* ---- walking Home --------------------------------------------------------------------- */

static char *paths[MAX_PATHS + 1];
static int npaths;

static int
collect (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st, (void)flag;
  if (ftw->level == 0)
    return 0; /* Home itself may be stat'ed (its parent is open); see probe_home */
  cr_assert_lt (npaths, MAX_PATHS, "too many paths under Home");
  paths[npaths++] = strdup (path);
  paths[npaths] = NULL;
  return 0;
}

/* Every path below Home (into the mounted layer too); returns the count. */
static int
walk_home (void)
{
  for (int i = 0; i < npaths; i++)
    free (paths[i]);
  npaths = 0;
  paths[0] = NULL;
  cr_assert_eq (nftw (srv.home, collect, 32, FTW_PHYS), 0, "walk %s", srv.home);
  return npaths;
}

static bool
walked (const char *suffix)
{
  size_t sl = strlen (suffix);
  for (int i = 0; i < npaths; i++)
    {
      size_t l = strlen (paths[i]);
      if (l >= sl && strcmp (paths[i] + l - sl, suffix) == 0)
        return true;
    }
  return false;
}

static mode_t
mode_of (const char *path, struct stat *st)
{
  cr_assert_eq (lstat (path, st), 0, "stat %s: %s", path, strerror (errno));
  return st->st_mode & 07777;
}

/* ---- tests ---------------------------------------------------------------------------- */

ACCESS_TEST (legacy_socket_is_0600_root)
{
  struct stat st;
  char msg[MSG_LEN];

  cr_assert_eq (mode_of (srv.socket, &st), 0600, "socket mode %04o", st.st_mode & 07777);
  cr_assert (S_ISSOCK (st.st_mode), "%s is not a socket", srv.socket);
  cr_assert_eq (st.st_uid, 0, "socket owner %u", st.st_uid);
  cr_assert_eq (st.st_gid, 0, "socket group %u", st.st_gid);
  /* the directory above lets anybody in: the socket's own mode is what refuses */
  char dir[PATH_MAX];
  snprintf (dir, sizeof dir, "%s", srv.socket);
  cr_assert_eq (mode_of (dirname (dir), &st) & 0001, 0001, "%s is not searchable", dir);
  cr_assert_eq (as_user (NOBODY, NOBODY, probe_connect, srv.socket, msg, sizeof msg), 0,
                "nobody could connect: %s", msg);
}

ACCESS_TEST (home_images_and_state_are_private)
{
  char dir[PATH_MAX], path[PATH_MAX + 64], msg[MSG_LEN];
  struct stat st;

  init ("null");
  populate (dir);

  cr_assert_eq (mode_of (srv.home, &st), 0700, "Home mode %04o", st.st_mode & 07777);
  cr_assert_eq (st.st_uid, 0);
  snprintf (path, sizeof path, "%s/mnt", srv.home);
  cr_assert_eq (mode_of (path, &st) & 0077, 0, "mnt/ mode %04o", st.st_mode & 07777);
  snprintf (path, sizeof path, "%s/layers", srv.home);
  cr_assert_eq (mode_of (path, &st) & 0077, 0, "layers/ mode %04o", st.st_mode & 07777);
  cr_assert_eq (mode_of (srv.state, &st), 0600, "state file mode %04o", st.st_mode & 07777);
  cr_assert_eq (st.st_uid, 0);

  /* every object the store keeps is out of reach: images, deltas, descriptors, the
     mounted root and a world-readable file in it, the engine's run files */
  cr_assert_gt (walk_home (), 10);
  cr_assert (walked ("/layers/base/root.hdd"), "no base delta found under Home");
  cr_assert (walked ("/layers/child/DiskDescriptor.xml"), "no child descriptor found");
  cr_assert (walked ("/mnt/child/world-readable"), "the mounted root was not walked");
  for (int i = 0; i < npaths; i++)
    if (strstr (paths[i], "/layers/") != NULL && strstr (paths[i], "/root.hdd") != NULL)
      cr_assert_eq (mode_of (paths[i], &st) & 0077, 0, "delta %s mode %04o", paths[i],
                    st.st_mode & 07777);
  cr_assert_eq (as_user (NOBODY, NOBODY, probe_unreadable, srv.home, msg, sizeof msg), 0,
                "nobody listed Home: %s", msg);
  cr_assert_eq (as_user (NOBODY, NOBODY, probe_all_refused, paths, msg, sizeof msg), 0,
                "nobody reached what is under Home: %s", msg);
  cr_assert_eq (as_user (NOBODY, NOBODY, probe_unreadable, srv.state, msg, sizeof msg), 0,
                "nobody read the state file: %s", msg);
  call_ok ("/GraphDriver.Put", "{\"ID\":\"child\"}\n");
}

/* Open PATH as a directory: 0, or -1 with errno. */
static int
can_list (const char *path)
{
  int fd = open (path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (fd < 0)
    return -1;
  close (fd);
  return 0;
}

/* The remapped root (host 100000) reaches the container's root CTX, but can list
   neither Home nor mnt/, and cannot reach the layer images. */
static int
probe_remapped_root (const void *ctx, char *msg, size_t cap)
{
  const char *dir = ctx;
  char mnt[PATH_MAX + 8], layer[PATH_MAX + 16];

  snprintf (mnt, sizeof mnt, "%s/mnt", srv.home);
  snprintf (layer, sizeof layer, "%s/layers/base", srv.home);
  int rc = can_list (dir);

  if (rc < 0)
    {
      snprintf (msg, cap, "the remapped root cannot reach %s: %s", dir, outcome (rc));
      return -1;
    }
  rc = can_list (srv.home);
  if (!denied (rc))
    {
      snprintf (msg, cap, "list %s: %s", srv.home, outcome (rc));
      return -1;
    }
  rc = can_list (mnt);
  if (!denied (rc))
    {
      snprintf (msg, cap, "list %s: %s", mnt, outcome (rc));
      return -1;
    }
  return refused (layer, msg, cap);
}

ACCESS_TEST (userns_remapped_root_reaches_only_container_roots)
{
  char dir[PATH_MAX], path[PATH_MAX + 64], msg[MSG_LEN];
  struct stat st;

  init ("[{\"container_id\":0,\"host_id\":100000,\"size\":65536}]");
  populate (dir);
  cr_assert_eq (mode_of (srv.home, &st), 0710, "Home mode %04o", st.st_mode & 07777);
  cr_assert_eq (st.st_gid, REMAP_BASE, "Home group %u", st.st_gid);
  snprintf (path, sizeof path, "%s/mnt", srv.home);
  cr_assert_eq (mode_of (path, &st), 0710, "mnt/ mode %04o", st.st_mode & 07777);
  cr_assert_eq (st.st_gid, REMAP_BASE, "mnt/ group %u", st.st_gid);
  cr_assert_eq (as_user (REMAP_BASE, REMAP_BASE, probe_remapped_root, dir, msg, sizeof msg), 0,
                "%s", msg);
  cr_assert_gt (walk_home (), 10);
  cr_assert_eq (as_user (NOBODY, NOBODY, probe_unreadable, srv.home, msg, sizeof msg), 0,
                "nobody listed Home: %s", msg);
  cr_assert_eq (as_user (NOBODY, NOBODY, probe_all_refused, paths, msg, sizeof msg), 0,
                "nobody reached what is under Home: %s", msg);
  call_ok ("/GraphDriver.Put", "{\"ID\":\"child\"}\n");
}

/* The repository's config.json: next to the build directory the tests run from. */
static json_t *
load_config (void)
{
  const char *b = getenv ("PGD_BUILD");
  char build[PATH_MAX], path[PATH_MAX + 16];
  json_error_t jerr;
  json_t *cfg;

  cr_assert_not_null (realpath (b && *b ? b : "build", build), "build directory");
  snprintf (path, sizeof path, "%s/config.json", dirname (build));
  cfg = json_load_file (path, 0, &jerr);
  cr_assert_not_null (cfg, "%s: %s", path, jerr.text);
  return cfg;
}

ACCESS_TEST (managed_plugin_asks_only_for_what_it_uses)
{
  json_t *cfg = load_config (), *v;
  json_t *linux_ = json_object_get (cfg, "linux");
  json_t *caps = json_object_get (linux_, "capabilities");
  json_t *devices = json_object_get (linux_, "devices");
  json_t *mounts = json_object_get (cfg, "mounts");
  bool fuse = false, loopctl = false;
  size_t i;
  char dir[PATH_MAX], msg[65536];

  cr_assert (json_is_array (caps) && json_array_size (caps) == 1, "capabilities: exactly one");
  cr_assert_str_eq (json_string_value (json_array_get (caps, 0)), "CAP_SYS_ADMIN");
  cr_assert (json_is_array (devices), "linux.devices");
  json_array_foreach (devices, i, v)
  {
    const char *p = json_string_value (json_object_get (v, "path"));
    cr_assert_not_null (p, "a device without a path");
    cr_assert (strcmp (p, "/dev/fuse") == 0 || strcmp (p, "/dev/loop-control") == 0,
               "config.json asks for device %s", p);
    fuse |= strcmp (p, "/dev/fuse") == 0;
    loopctl |= strcmp (p, "/dev/loop-control") == 0;
  }
  cr_assert_eq (json_array_size (devices), 2, "each device once");
  cr_assert (fuse && loopctl);
  /* allowAllDevices stays: loop devices are created at run time (LOOP_CTL_GET_FREE),
     and a plugin's devices list only covers nodes that exist when it is enabled */
  cr_assert (json_is_boolean (json_object_get (linux_, "allowAllDevices")));
  cr_assert (!json_is_true (json_object_get (cfg, "pidhost")), "pidhost");
  cr_assert (!json_is_true (json_object_get (cfg, "ipchost")), "ipchost");
  v = json_object_get (json_object_get (cfg, "network"), "type");
  cr_assert (v == NULL || strcmp (json_string_value (v), "host") != 0, "host network");
  /* one mount: the host's /dev, for the loop device nodes */
  cr_assert (json_is_array (mounts) && json_array_size (mounts) == 1, "mounts");
  cr_assert_str_eq (json_string_value (json_object_get (json_array_get (mounts, 0), "source")),
                    "/dev");
  cr_assert_str_eq (json_string_value (json_object_get (json_array_get (mounts, 0), "destination")),
                    "/dev");
  json_decref (cfg);

  /* and the user engine does use both: a mounted layer has a loop device (found
     through /dev/loop-control) and an image server holding /dev/fuse */
  init ("null");
  populate (dir);
  cr_assert_geq (lk_loops_under (srv.home, msg, sizeof msg), 1, "no loop device for the layer");
  const char *const needles[] = { "serve-image", srv.home, NULL };
  cr_assert_eq (lk_procs_matching (srv.pid, msg, sizeof msg, needles), 1, "image servers: %s", msg);
  lk_fd_list ((pid_t)atoi (msg), msg, sizeof msg);
  cr_assert (strstr (msg, "-> /dev/fuse\n") != NULL, "the image server has no /dev/fuse:\n%s", msg);
  call_ok ("/GraphDriver.Put", "{\"ID\":\"child\"}\n");
}
