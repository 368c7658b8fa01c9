/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

void
pgd_freep (void *p)
{
  free (*(void **)p);
}

void
pgd_closep (int *fd)
{
  if (*fd >= 0)
    close (*fd);
}

void
pgd_fclosep (FILE **f)
{
  if (*f)
    fclose (*f);
}

void
pgd_closedirp (DIR **d)
{
  if (*d)
    closedir (*d);
}

void
pgd_unlockp (pthread_mutex_t **m)
{
  if (*m)
    pthread_mutex_unlock (*m);
}

bool
pgd_id_valid (const char *id, struct pgd_err *err)
{
  size_t len;

  if (id == NULL || id[0] == '\0')
    return pgd_error (err, 0, "invalid ID: empty"), false;
  len = strnlen (id, PGD_ID_MAX + 1);
  if (len > PGD_ID_MAX)
    return pgd_error (err, 0, "invalid ID: longer than %d bytes", PGD_ID_MAX), false;
  if (strcmp (id, ".") == 0 || strcmp (id, "..") == 0)
    return pgd_error (err, 0, "invalid ID \"%s\": not a plain name", id), false;
  for (const unsigned char *p = (const unsigned char *)id; *p; p++)
    {
      if (*p == '/')
        return pgd_error (err, 0, "invalid ID \"%s\": contains '/'", id), false;
      if (*p < 0x20 || *p == 0x7f)
        return pgd_error (err, 0, "invalid ID: contains control character 0x%02x", *p), false;
    }
  return true;
}

DIR *
pgd_opendir_dup (int fd, const char *shown, struct pgd_err *err)
{
  int dfd = fcntl (fd, F_DUPFD_CLOEXEC, 0);
  if (dfd < 0)
    return pgd_error (err, errno, "dup %s", shown), NULL;
  DIR *d = fdopendir (dfd);
  if (d == NULL)
    {
      pgd_error (err, errno, "opendir %s", shown);
      close (dfd);
    }
  return d;
}

int
pgd_readdir (DIR *d, struct dirent **de, const char *shown, struct pgd_err *err)
{
  for (;;)
    {
      errno = 0;
      *de = readdir (d);
      if (*de == NULL)
        return errno != 0 ? pgd_error (err, errno, "readdir %s", shown) : 0;
      if (strcmp ((*de)->d_name, ".") != 0 && strcmp ((*de)->d_name, "..") != 0)
        return 1;
    }
}

int
pgd_mkdir_p (const char *path, mode_t mode, struct pgd_err *err)
{
  char buf[PATH_MAX];
  size_t len = strlen (path);

  if (len == 0 || len >= sizeof buf)
    return pgd_error (err, ENAMETOOLONG, "mkdir %s", path);
  memcpy (buf, path, len + 1);
  for (char *p = buf + 1; *p; p++)
    {
      if (*p != '/')
        continue;
      *p = '\0';
      if (mkdir (buf, mode) < 0 && errno != EEXIST)
        return pgd_error (err, errno, "mkdir %s", buf);
      *p = '/';
    }
  if (mkdir (buf, mode) < 0 && errno != EEXIST)
    return pgd_error (err, errno, "mkdir %s", buf);
  return 0;
}

static int
rm_rf_at (int at, const char *name, dev_t dev, struct pgd_err *err)
{
  struct stat st;

  if (fstatat (at, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return errno == ENOENT ? 0 : pgd_error (err, errno, "stat %s", name);
  if (S_ISDIR (st.st_mode))
    {
      if (st.st_dev != dev)
        return pgd_error (err, EBUSY, "remove %s: a mount is still inside", name);
      int fd = openat (at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0)
        return pgd_error (err, errno, "open %s", name);
      cleanup_dir DIR *d = fdopendir (fd);
      if (d == NULL)
        {
          close (fd);
          return pgd_error (err, errno, "opendir %s", name);
        }
      struct dirent *de;
      while ((de = readdir (d)) != NULL)
        {
          if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
            continue;
          if (rm_rf_at (dirfd (d), de->d_name, dev, err) < 0)
            return pgd_error_wrap (err, "remove %s", name);
        }
      if (unlinkat (at, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return pgd_error (err, errno, "rmdir %s", name);
      return 0;
    }
  if (unlinkat (at, name, 0) < 0 && errno != ENOENT)
    return pgd_error (err, errno, "unlink %s", name);
  return 0;
}

int
pgd_rm_rf (const char *path, struct pgd_err *err)
{
  struct stat st;

  if (lstat (path, &st) < 0)
    return errno == ENOENT ? 0 : pgd_error (err, errno, "stat %s", path);
  return rm_rf_at (AT_FDCWD, path, st.st_dev, err);
}

int
pgd_fsync_dir (const char *path, struct pgd_err *err)
{
  cleanup_close int fd = open (path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (fd < 0)
    return pgd_error (err, errno, "open %s", path);
  if (fsync (fd) < 0)
    return pgd_error (err, errno, "fsync %s", path);
  return 0;
}

int
pgd_write_file_atomic (const char *path, const void *data, size_t len, struct pgd_err *err)
{
  return pgd_write_file_as (path, data, len, 0, err);
}

int
pgd_write_file_as (const char *path, const void *data, size_t len, unsigned flags,
                   struct pgd_err *err)
{
  char tmp[PATH_MAX];
  char dir[PATH_MAX];
  const char *p = data;
  cleanup_close int fd = -1;

  if (snprintf (tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
    return pgd_error (err, ENAMETOOLONG, "write %s", path);
  fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return pgd_error (err, errno, "create %s", tmp);
  while (len > 0)
    {
      ssize_t n = write (fd, p, len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return pgd_error (err, errno, "write %s", tmp);
      p += n;
      len -= n;
    }
  if (!(flags & PGD_WRITE_NO_FSYNC) && fsync (fd) < 0)
    return pgd_error (err, errno, "fsync %s", tmp);
  if (rename (tmp, path) < 0)
    return pgd_error (err, errno, "rename %s to %s", tmp, path);
  if (flags & (PGD_WRITE_NO_FSYNC | PGD_WRITE_NO_DIRSYNC))
    return 0;
  snprintf (dir, sizeof dir, "%s", path);
  char *slash = strrchr (dir, '/');
  if (slash == NULL)
    return pgd_fsync_dir (".", err);
  *slash = '\0';
  return pgd_fsync_dir (dir[0] ? dir : "/", err);
}

int
pgd_read_file (const char *path, char **data, size_t *len, struct pgd_err *err)
{
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC);
  cleanup_free char *buf = NULL;
  size_t cap = 0, used = 0;

  if (fd < 0)
    return pgd_error (err, errno, "open %s", path);
  for (;;)
    {
      if (used + 4096 + 1 > cap)
        {
          cap = cap ? cap * 2 : 8192;
          char *nb = realloc (buf, cap);
          if (nb == NULL)
            return pgd_error (err, ENOMEM, "read %s", path);
          buf = nb;
        }
      ssize_t n = read (fd, buf + used, cap - used - 1);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return pgd_error (err, errno, "read %s", path);
      if (n == 0)
        break;
      used += n;
    }
  buf[used] = '\0';
  *data = buf;
  buf = NULL;
  if (len)
    *len = used;
  return 0;
}

int
pgd_run (char *const argv[], struct pgd_err *err)
{
  int code;

  if (pgd_run_code (argv, &code, err) < 0)
    return -1;
  return code == 0 ? 0 : -1;
}

int
pgd_run_code (char *const argv[], int *code, struct pgd_err *err)
{
  int pfd[2];
  char out[1024];
  size_t used = 0;
  int status;
  pid_t pid;

  if (pipe2 (pfd, O_CLOEXEC) < 0)
    return pgd_error (err, errno, "pipe for %s", argv[0]);
  pid = fork ();
  if (pid < 0)
    {
      close (pfd[0]);
      close (pfd[1]);
      return pgd_error (err, errno, "fork for %s", argv[0]);
    }
  if (pid == 0)
    {
      int devnull = open ("/dev/null", O_RDWR);
      dup2 (devnull, 0);
      dup2 (devnull, 1);
      dup2 (pfd[1], 2);
      execvp (argv[0], argv);
      dprintf (2, "exec %s: %s", argv[0], strerror (errno));
      _exit (127);
    }
  close (pfd[1]);
  for (;;)
    {
      char tmp[512];
      ssize_t n = read (pfd[0], tmp, sizeof tmp);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      size_t take = (size_t)n < sizeof out - 1 - used ? (size_t)n : sizeof out - 1 - used;
      memcpy (out + used, tmp, take);
      used += take;
    }
  close (pfd[0]);
  out[used] = '\0';
  while (used > 0 && isspace ((unsigned char)out[used - 1]))
    out[--used] = '\0';
  while (waitpid (pid, &status, 0) < 0)
    if (errno != EINTR)
      return pgd_error (err, errno, "wait for %s", argv[0]);
  if (!WIFEXITED (status))
    return pgd_error (err, 0, "%s killed by signal %d", argv[0], WTERMSIG (status));
  *code = WEXITSTATUS (status);
  if (*code != 0)
    pgd_error (err, 0, "%s exited with %d%s%s", argv[0], *code, used ? ": " : "", out);
  return 0;
}

int
pgd_parse_size (const char *s, uint64_t *out, struct pgd_err *err)
{
  char *end;
  double v;
  uint64_t mult = 1;

  if (s == NULL || *s == '\0')
    return pgd_error (err, 0, "invalid size: empty");
  errno = 0;
  v = strtod (s, &end);
  if (errno != 0 || end == s || v < 0 || !isfinite (v))
    return pgd_error (err, 0, "invalid size \"%s\"", s);
  while (*end == ' ')
    end++;
  switch (tolower ((unsigned char)*end))
    {
    case '\0':
      break;
    case 'b':
      mult = 1;
      break;
    case 'k':
      mult = 1ULL << 10;
      break;
    case 'm':
      mult = 1ULL << 20;
      break;
    case 'g':
      mult = 1ULL << 30;
      break;
    case 't':
      mult = 1ULL << 40;
      break;
    case 'p':
      mult = 1ULL << 50;
      break;
    default:
      return pgd_error (err, 0, "invalid size \"%s\": unknown unit", s);
    }
  if (*end)
    {
      end++;
      if (tolower ((unsigned char)*end) == 'i')
        end++;
      if (tolower ((unsigned char)*end) == 'b')
        end++;
      if (*end)
        return pgd_error (err, 0, "invalid size \"%s\": trailing characters", s);
    }
  if (v * (double)mult >= 18446744073709551615.0)
    return pgd_error (err, 0, "invalid size \"%s\": too large", s);
  *out = (uint64_t)(v * (double)mult);
  return 0;
}

void
pgd_pathf (char *buf, size_t size, const char *fmt, ...)
{
  va_list ap;
  int n;

  va_start (ap, fmt);
  n = vsnprintf (buf, size, fmt, ap);
  va_end (ap);
  if (n < 0 || (size_t)n >= size)
    {
      fprintf (stderr, "path longer than %zu bytes: %s...\n", size, buf);
      abort ();
    }
}

uint64_t
pgd_now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

struct timespec
pgd_timespec_at (uint64_t at)
{
  return (struct timespec){ .tv_sec = (time_t)(at / 1000000000ULL),
                            .tv_nsec = (long)(at % 1000000000ULL) };
}

unsigned
pgd_elapsed_ms (uint64_t since)
{
  return (unsigned)((pgd_now_ns () - since) / 1000000ULL);
}

void
pgd_sleep_ms (unsigned ms)
{
  struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
  while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
    ;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo */
static void
unescape_mountinfo (char *s)
{
  char *w = s;
  for (char *r = s; *r; r++)
    {
      if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] && r[3])
        {
          *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
          r += 3;
        }
      else
        *w++ = *r;
    }
  *w = '\0';
}

char *
pgd_mountinfo_point (char *line, char **save)
{
  char *tok = strtok_r (line, " ", save);
  for (int i = 0; tok && i < 4; i++)
    tok = strtok_r (NULL, " ", save);
  if (tok)
    unescape_mountinfo (tok);
  return tok;
}

/* Find the mountinfo line whose mount point is PATH; copy its source into SRC. */
static bool
find_mount (const char *path, char *src, size_t len)
{
  cleanup_fclose FILE *f = fopen ("/proc/self/mountinfo", "re");
  cleanup_free char *line = NULL;
  size_t cap = 0;
  bool found = false;

  if (f == NULL)
    return false;
  while (getline (&line, &cap, f) > 0)
    {
      char *save = NULL, *tok = pgd_mountinfo_point (line, &save);
      if (tok == NULL || strcmp (tok, path) != 0)
        continue;
      found = true; /* keep going: the last (topmost) mount wins */
      if (src == NULL)
        continue;
      /* after the optional fields comes "-", then fstype, then source */
      while ((tok = strtok_r (NULL, " ", &save)) && strcmp (tok, "-") != 0)
        ;
      if (tok && strtok_r (NULL, " ", &save) && (tok = strtok_r (NULL, " ", &save)))
        {
          unescape_mountinfo (tok);
          snprintf (src, len, "%s", tok);
        }
    }
  return found;
}

bool
pgd_is_mountpoint (const char *path)
{
  return find_mount (path, NULL, 0);
}

int
pgd_mount_source (const char *path, char *buf, size_t len, struct pgd_err *err)
{
  buf[0] = '\0';
  if (!find_mount (path, buf, len) || buf[0] == '\0')
    return pgd_error (err, EINVAL, "%s is not a mount point", path);
  return 0;
}
