/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The image server ("ploop-graphdriver serve-image"): one process per mounted image.
   It opens the delta chain, mounts FUSE at --mountpoint exposing one regular file,
   "disk", of the virtual size, serves it until that FUSE mount goes away, then closes
   the image cleanly (flush, in-use cleared) and exits 0 (PLOOP.md §6).

   Memory: a fixed set of worker threads, each with one receive buffer that also holds
   the data of read replies; nothing is allocated per request by this file. The process
   is an I/O flusher (no recursion into I/O reclaim) and locks its pages once touched. */
#include "imgsrv.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "chain.h"
#include "imgctl.h"
#include "log.h"
#include "srvproc.h"
#include "util.h"

#define DISK_NAME "disk"
#define DISK_INO 2
#define CTL_INO 3            /* the control node (imgctl.h) */
#define ATTR_TIMEOUT 86400.0 /* the size changes only through grow */
#define DEFAULT_THREADS 4
#define MAX_THREADS 16
#define DEFAULT_MAX_IO (256u * 1024) /* bytes per FUSE READ/WRITE request */
#define MAX_MAX_IO (1u << 20)        /* the kernel's default max_pages_limit */
#define MIN_MAX_IO (64u * 1024)
#define FUSE_MAX_PAGES_BUF ((256u + 1) * 4096) /* libfuse reads up to this before INIT */
/* fuse_in_header + fuse_write_in precede a WRITE's data: receiving at this distance
   before a page boundary puts the data on the boundary, ready for O_DIRECT */
#define WRITE_HDR 80
#define PAGE 4096
#define THREAD_STACK (256 * 1024)

struct srv
{
  struct pgd_chain *chain;
  struct fuse_session *se;
  const char *dd;
  const char *mountpoint;
  const char *status_path;
  char *owned_dd, *owned_status;          /* DD and status of the image a snapshot switched to */
  char *deltas[PGD_CHAIN_MAX_LEVELS + 1]; /* --delta, base first, NULL-terminated */
  unsigned ndeltas;
  bool raw_base;
  uint64_t size;
  bool ro;
  bool fuse_dio;
  bool buffered;
  bool mlock;
  unsigned nthreads;
  size_t max_io;
  time_t start;
  sem_t prepared; /* posted by each worker once its copy-on-write buffer is in place */
};

/* The receive buffer of the worker running the current request. */
static __thread char *cur_buf;
static __thread size_t cur_buf_len;

static void
disk_attr (const struct srv *s, fuse_ino_t ino, struct stat *st)
{
  memset (st, 0, sizeof *st);
  st->st_ino = ino;
  st->st_uid = 0;
  st->st_gid = 0;
  st->st_mtime = st->st_ctime = st->st_atime = s->start;
  if (ino == FUSE_ROOT_ID)
    {
      st->st_mode = S_IFDIR | 0700;
      st->st_nlink = 2;
      return;
    }
  st->st_nlink = 1;
  if (ino == CTL_INO)
    {
      st->st_mode = S_IFREG | 0200;
      return;
    }
  st->st_mode = S_IFREG | (s->ro ? 0400 : 0600);
  st->st_size = (off_t)s->size;
  st->st_blksize = 4096;
  st->st_blocks = (blkcnt_t)(s->size / 512);
}

static void
reply_chain_err (fuse_req_t req, const char *op, const struct pgd_err *err)
{
  int e = err->errnum ? err->errnum : EIO;
  if (e != ENOSPC && e != EROFS && e != ENXIO)
    pgd_log (PGD_LOG_ERROR, "%s: %s", op, err->msg);
  fuse_reply_err (req, e);
}

static void
op_init (void *ud, struct fuse_conn_info *conn)
{
  struct srv *s = ud;

  conn->max_write = (unsigned)s->max_io;
  conn->max_readahead = (unsigned)s->max_io;
  conn->max_background = 4 * s->nthreads;
  conn->congestion_threshold = 3 * s->nthreads;
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE
                  | FUSE_CAP_WRITEBACK_CACHE);
}

static void
op_lookup (fuse_req_t req, fuse_ino_t parent, const char *name)
{
  struct srv *s = fuse_req_userdata (req);
  struct fuse_entry_param e;

  bool ctl = parent == FUSE_ROOT_ID && strcmp (name, PGD_IMGCTL_NAME) == 0;
  if (parent != FUSE_ROOT_ID || (!ctl && strcmp (name, DISK_NAME) != 0))
    {
      fuse_reply_err (req, ENOENT);
      return;
    }
  memset (&e, 0, sizeof e);
  e.ino = ctl ? CTL_INO : DISK_INO;
  e.generation = 1;
  e.attr_timeout = ATTR_TIMEOUT;
  e.entry_timeout = ATTR_TIMEOUT;
  disk_attr (s, e.ino, &e.attr);
  fuse_reply_entry (req, &e);
}

static void
op_getattr (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct srv *s = fuse_req_userdata (req);
  struct stat st;

  (void)fi;
  if (ino != FUSE_ROOT_ID && ino != DISK_INO && ino != CTL_INO)
    {
      fuse_reply_err (req, ENOENT);
      return;
    }
  disk_attr (s, ino, &st);
  fuse_reply_attr (req, &st, ATTR_TIMEOUT);
}

static void
op_setattr (fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
            struct fuse_file_info *fi)
{
  struct srv *s = fuse_req_userdata (req);

  if ((to_set & FUSE_SET_ATTR_SIZE) && ino == DISK_INO && (uint64_t)attr->st_size != s->size)
    {
      fuse_reply_err (req, EPERM); /* the size changes only through grow */
      return;
    }
  op_getattr (req, ino, fi);
}

static void
op_open (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct srv *s = fuse_req_userdata (req);

  if (ino == CTL_INO)
    {
      /* every write reaches the server as written: one command, answered */
      if ((fi->flags & O_ACCMODE) != O_WRONLY)
        fuse_reply_err (req, EACCES);
      else
        {
          fi->direct_io = 1;
          fi->nonseekable = 1;
          fuse_reply_open (req, fi);
        }
      return;
    }
  if (ino != DISK_INO)
    {
      fuse_reply_err (req, EISDIR);
      return;
    }
  if (s->ro && (fi->flags & O_ACCMODE) != O_RDONLY)
    {
      fuse_reply_err (req, EROFS);
      return;
    }
  fi->direct_io = s->fuse_dio;
  fi->keep_cache = 1;
  fuse_reply_open (req, fi);
}

static void
op_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
  struct srv *s = fuse_req_userdata (req);
  struct pgd_err err = { 0 };

  (void)ino;
  (void)fi;
  if ((uint64_t)off >= s->size)
    {
      fuse_reply_buf (req, NULL, 0);
      return;
    }
  if (size > s->size - (uint64_t)off)
    size = s->size - (uint64_t)off;
  /* the request was parsed already: its receive buffer holds the reply */
  if (size > cur_buf_len)
    {
      pgd_log (PGD_LOG_ERROR, "read of %zu bytes exceeds the %zu byte buffer", size, cur_buf_len);
      fuse_reply_err (req, EIO);
      return;
    }
  if (pgd_chain_read (s->chain, cur_buf, size, (uint64_t)off, &err) < 0)
    {
      reply_chain_err (req, "read", &err);
      return;
    }
  fuse_reply_buf (req, cur_buf, size);
}

/* A control command (imgctl.h); a snapshot moves the server to the new image's paths. */
static void
control (fuse_req_t req, struct srv *s, const char *buf, size_t size)
{
  struct pgd_err err = { 0 };
  char *dd = NULL, *status = NULL;

  if (pgd_imgctl_run (s->chain, buf, size, &dd, &status, &err) < 0)
    {
      pgd_log (PGD_LOG_ERROR, "control: %s", err.msg);
      fuse_reply_err (req, err.errnum ? err.errnum : EIO);
      return;
    }
  free (s->owned_dd);
  free (s->owned_status);
  s->dd = s->owned_dd = dd;
  s->status_path = s->owned_status = status;
  fuse_reply_write (req, size);
}

static void
op_write (fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
          struct fuse_file_info *fi)
{
  struct srv *s = fuse_req_userdata (req);
  struct pgd_err err = { 0 };

  (void)fi;
  if (ino == CTL_INO)
    {
      control (req, s, buf, size);
      return;
    }
  /* BUF is consumed (written to the delta) before the reply (PLOOP.md §6.3a) */
  if (pgd_chain_write (s->chain, buf, size, (uint64_t)off, &err) < 0)
    {
      reply_chain_err (req, "write", &err);
      return;
    }
  fuse_reply_write (req, size);
}

static void
op_flush (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  (void)ino;
  (void)fi;
  fuse_reply_err (req, 0);
}

static void
op_release (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  (void)ino;
  (void)fi;
  fuse_reply_err (req, 0);
}

static void
op_fsync (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
  struct srv *s = fuse_req_userdata (req);
  struct pgd_err err = { 0 };

  (void)ino;
  (void)datasync;
  (void)fi;
  if (pgd_chain_flush (s->chain, &err) < 0)
    {
      reply_chain_err (req, "fsync", &err);
      return;
    }
  fuse_reply_err (req, 0);
}

static void
op_fallocate (fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
              struct fuse_file_info *fi)
{
  struct srv *s = fuse_req_userdata (req);
  struct pgd_err err = { 0 };
  uint64_t end;

  (void)ino;
  (void)fi;
  if (off < 0 || len <= 0)
    {
      fuse_reply_err (req, EINVAL);
      return;
    }
  if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
      || (mode & ~(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE))
      || ((mode & FALLOC_FL_PUNCH_HOLE) && !(mode & FALLOC_FL_KEEP_SIZE)))
    {
      fuse_reply_err (req, EOPNOTSUPP);
      return;
    }
  end = (uint64_t)off + (uint64_t)len;
  if (end > s->size)
    {
      if (!(mode & FALLOC_FL_KEEP_SIZE))
        {
          fuse_reply_err (req, ENOSPC);
          return;
        }
      end = s->size;
    }
  if ((uint64_t)off < end && pgd_chain_zero (s->chain, (uint64_t)off, end - off, &err) < 0)
    {
      reply_chain_err (req, "fallocate", &err);
      return;
    }
  fuse_reply_err (req, 0);
}

static void
op_lseek (fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
  struct srv *s = fuse_req_userdata (req);
  struct pgd_err err = { 0 };
  uint64_t out;

  (void)ino;
  (void)fi;
  if ((whence != SEEK_DATA && whence != SEEK_HOLE) || off < 0)
    {
      fuse_reply_err (req, EINVAL);
      return;
    }
  if (pgd_chain_seek (s->chain, (uint64_t)off, whence == SEEK_DATA, &out, &err) < 0)
    {
      reply_chain_err (req, "lseek", &err);
      return;
    }
  fuse_reply_lseek (req, (off_t)out);
}

static void
op_readdir (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
  static const char *const names[] = { ".", "..", DISK_NAME };
  struct srv *s = fuse_req_userdata (req);
  char buf[512];
  size_t used = 0;

  (void)fi;
  if (ino != FUSE_ROOT_ID)
    {
      fuse_reply_err (req, ENOTDIR);
      return;
    }
  if (size > sizeof buf)
    size = sizeof buf;
  for (off_t i = off; i < 3; i++)
    {
      struct stat st;
      disk_attr (s, i == 2 ? DISK_INO : FUSE_ROOT_ID, &st);
      size_t n = fuse_add_direntry (req, buf + used, size - used, names[i], &st, i + 1);
      if (n > size - used)
        break;
      used += n;
    }
  fuse_reply_buf (req, buf, used);
}

static void
op_statfs (fuse_req_t req, fuse_ino_t ino)
{
  struct srv *s = fuse_req_userdata (req);
  struct statvfs sv;

  (void)ino;
  memset (&sv, 0, sizeof sv);
  sv.f_bsize = sv.f_frsize = 4096;
  sv.f_blocks = s->size / 4096;
  sv.f_files = 2;
  sv.f_namemax = 255;
  fuse_reply_statfs (req, &sv);
}

static const struct fuse_lowlevel_ops ops = {
  .init = op_init,
  .lookup = op_lookup,
  .getattr = op_getattr,
  .setattr = op_setattr,
  .open = op_open,
  .read = op_read,
  .write = op_write,
  .flush = op_flush,
  .release = op_release,
  .fsync = op_fsync,
  .readdir = op_readdir,
  .statfs = op_statfs,
  .fallocate = op_fallocate,
  .lseek = op_lseek,
};

/* ---- worker threads ----------------------------------------------------------------- */

struct worker
{
  struct srv *s;
  pthread_t tid;
  char *mem; /* page aligned; read replies are built at its start */
  size_t len;
  bool started;
};

static void *
worker_main (void *arg)
{
  struct worker *w = arg;
  struct fuse_session *se = w->s->se;
  struct fuse_buf fbuf;

  struct pgd_err err = { 0 };

  /* a request is parsed before its handler runs: a READ's reply may overwrite it */
  cur_buf = w->mem;
  cur_buf_len = w->len;
  /* before lock_memory; a failure only means its copies on write will fail (ENOMEM) */
  if (pgd_chain_thread_prepare (w->s->chain, &err) < 0)
    pgd_log (PGD_LOG_WARN, "worker: %s", err.msg);
  sem_post (&w->s->prepared);
  while (!fuse_session_exited (se))
    {
      memset (&fbuf, 0, sizeof fbuf);
      fbuf.mem = w->mem + PAGE - WRITE_HDR;
      fbuf.size = FUSE_MAX_PAGES_BUF;
      int res = fuse_session_receive_buf (se, &fbuf);
      if (res == -EINTR || res == -EAGAIN)
        continue;
      if (res <= 0)
        {
          if (res < 0)
            pgd_log (PGD_LOG_ERROR, "receive from /dev/fuse: %s", strerror (-res));
          break;
        }
      fuse_session_process_buf (se, &fbuf);
    }
  fuse_session_exit (se);
  return NULL;
}

static int
start_workers (struct srv *s, struct worker *w, struct pgd_err *err)
{
  pthread_attr_t attr;
  int rc;

  pthread_attr_init (&attr);
  pthread_attr_setstacksize (&attr, THREAD_STACK);
  for (unsigned i = 0; i < s->nthreads; i++)
    {
      w[i].s = s;
      /* virtual size covers libfuse's pre-INIT read size; only touched pages count */
      w[i].len = PAGE + FUSE_MAX_PAGES_BUF;
      w[i].mem = mmap (NULL, w[i].len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (w[i].mem == MAP_FAILED)
        {
          w[i].mem = NULL;
          pthread_attr_destroy (&attr);
          return pgd_error (err, errno, "worker buffer");
        }
      /* touch what a request can fill now: a page fault in the server under memory
         pressure may wait on writeback that only the server can finish */
      memset (w[i].mem, 0, w[i].len < 2 * PAGE + s->max_io ? w[i].len : 2 * PAGE + s->max_io);
      rc = pthread_create (&w[i].tid, &attr, worker_main, &w[i]);
      if (rc != 0)
        {
          pthread_attr_destroy (&attr);
          return pgd_error (err, rc, "worker thread");
        }
      w[i].started = true;
    }
  pthread_attr_destroy (&attr);
  for (unsigned i = 0; i < s->nthreads; i++)
    while (sem_wait (&s->prepared) < 0 && errno == EINTR)
      ;
  return 0;
}

static void
join_workers (struct srv *s, struct worker *w)
{
  for (unsigned i = 0; i < s->nthreads; i++)
    {
      if (w[i].started)
        pthread_join (w[i].tid, NULL);
      if (w[i].mem)
        munmap (w[i].mem, w[i].len);
    }
}

/* ---- process setup ------------------------------------------------------------------ */

static int
mount_fuse (struct srv *s, struct pgd_err *err)
{
  char opts[PATH_MAX + 64];
  char *argv[] = { (char *)"serve-image", (char *)"-o", opts, NULL };
  struct fuse_args args = FUSE_ARGS_INIT (3, argv);

  /* a comma would split the option list: the fsname is informational only */
  snprintf (opts, sizeof opts, "fsname=pgd,subtype=ploop%s", s->ro ? ",ro" : "");
  s->se = fuse_session_new (&args, &ops, sizeof ops, s);
  fuse_opt_free_args (&args);
  if (s->se == NULL)
    return pgd_error (err, EINVAL, "fuse session for %s", s->mountpoint);
  if (fuse_session_mount (s->se, s->mountpoint) != 0)
    {
      fuse_session_destroy (s->se);
      s->se = NULL;
      return pgd_error (err, EIO, "mount FUSE at %s", s->mountpoint);
    }
  return 0;
}

static void
write_status (const struct srv *s, const char *status)
{
  struct pgd_err err = { 0 };

  if (s->status_path && pgd_write_file_atomic (s->status_path, status, strlen (status), &err) < 0)
    pgd_log (PGD_LOG_ERROR, "%s", err.msg);
}

static void
tell_ready (int fd, const char *line)
{
  if (fd < 0)
    return;
  if (write (fd, line, strlen (line)) < 0)
    pgd_log (PGD_LOG_WARN, "ready fd: %s", strerror (errno));
  close (fd);
}

static void
usage (void)
{
  fprintf (stderr, "usage: serve-image --dd DiskDescriptor.xml --delta FILE... [--raw-base] "
                   "--mountpoint DIR [--ro] "
                   "[--ready-fd N] [--status FILE] [--threads N] [--max-io BYTES] "
                   "[--fuse-direct-io] [--buffered-io] [--no-mlock]\n");
}

static int
parse_args (struct srv *s, int *ready_fd, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "dd", required_argument, NULL, 'd' },
    { "mountpoint", required_argument, NULL, 'm' },
    { "ro", no_argument, NULL, 'r' },
    { "ready-fd", required_argument, NULL, 'f' },
    { "status", required_argument, NULL, 's' },
    { "threads", required_argument, NULL, 't' },
    { "max-io", required_argument, NULL, 'x' },
    { "fuse-direct-io", no_argument, NULL, 'D' },
    { "no-mlock", no_argument, NULL, 'L' },
    { "buffered-io", no_argument, NULL, 'B' },
    { "delta", required_argument, NULL, 'l' },
    { "raw-base", no_argument, NULL, 'R' },
    { NULL, 0, NULL, 0 },
  };
  int o;

  optind = 1;
  while ((o = getopt_long (argc, argv, "", longopts, NULL)) != -1)
    switch (o)
      {
      case 'd':
        s->dd = optarg;
        break;
      case 'm':
        s->mountpoint = optarg;
        break;
      case 'r':
        s->ro = true;
        break;
      case 'f':
        *ready_fd = atoi (optarg);
        break;
      case 's':
        s->status_path = optarg;
        break;
      case 't':
        s->nthreads = (unsigned)atoi (optarg);
        break;
      case 'x':
        s->max_io = (size_t)strtoul (optarg, NULL, 0);
        break;
      case 'D':
        s->fuse_dio = true;
        break;
      case 'L':
        s->mlock = false;
        break;
      case 'B':
        s->buffered = true;
        break;
      case 'l':
        if (s->ndeltas == PGD_CHAIN_MAX_LEVELS)
          return -1;
        s->deltas[s->ndeltas++] = optarg;
        break;
      case 'R':
        s->raw_base = true;
        break;
      default:
        return -1;
      }
  if (s->dd == NULL || s->mountpoint == NULL || s->ndeltas == 0 || optind != argc)
    return -1;
  s->deltas[s->ndeltas] = NULL;
  if (s->nthreads < 1 || s->nthreads > MAX_THREADS)
    s->nthreads = DEFAULT_THREADS;
  if (s->max_io < MIN_MAX_IO || s->max_io > MAX_MAX_IO)
    s->max_io = DEFAULT_MAX_IO;
  s->max_io &= ~(size_t)4095;
  return 0;
}

int
pgd_imgsrv_main (int argc, char **argv)
{
  struct srv s = { .nthreads = DEFAULT_THREADS, .max_io = DEFAULT_MAX_IO, .mlock = true };
  sem_init (&s.prepared, 0, 0);
  struct worker workers[MAX_THREADS];
  struct pgd_err err = { 0 };
  char line[PGD_ERR_MSG_MAX + 16];
  int ready_fd = -1, rc = 1;

  memset (workers, 0, sizeof workers);
  if (parse_args (&s, &ready_fd, argc, argv) < 0)
    {
      usage ();
      tell_ready (ready_fd, "ERROR bad arguments\n");
      return 2;
    }
  s.start = time (NULL);
  /* one malloc arena: the workers allocate only libfuse's small request objects */
  mallopt (M_ARENA_MAX, 1);
  pgd_srvproc_ignore_signals ();
  pgd_srvproc_harden ();
  if (pgd_chain_open_files (&s.chain, s.dd, s.deltas, s.raw_base,
                            (s.ro ? PGD_CHAIN_RO : 0) | (s.buffered ? PGD_CHAIN_BUFFERED : 0), &err)
      < 0)
    goto fail;
  s.size = pgd_chain_size (s.chain);
  if (mount_fuse (&s, &err) < 0)
    goto fail;
  if (start_workers (&s, workers, &err) < 0)
    {
      /* unmounting ends the workers that did start */
      fuse_session_unmount (s.se);
      join_workers (&s, workers);
      goto fail;
    }
  pgd_srvproc_lock_memory (s.mlock);
  pgd_log (PGD_LOG_INFO, "serving %s at %s/%s (%llu bytes, %u levels, %u KiB clusters%s)", s.dd,
           s.mountpoint, DISK_NAME, (unsigned long long)s.size, pgd_chain_levels (s.chain),
           pgd_chain_cluster_size (s.chain) / 1024, s.ro ? ", read-only" : "");
  snprintf (line, sizeof line, "READY %ld\n", (long)getpid ());
  tell_ready (ready_fd, line);
  ready_fd = -1;

  join_workers (&s, workers);
  fuse_session_unmount (s.se);
  fuse_session_destroy (s.se);
  s.se = NULL;
  struct pgd_chain_stats st;
  pgd_chain_get_stats (s.chain, &st);
  pgd_log (PGD_LOG_INFO,
           "%s: %llu clusters appended (%llu copied on write), %llu dropped, "
           "%llu flushes, %llu BAT page writes, %llu direct and %llu buffered I/Os",
           s.dd, (unsigned long long)st.allocs, (unsigned long long)st.cows,
           (unsigned long long)st.unmaps, (unsigned long long)st.flushes,
           (unsigned long long)st.bat_writes, (unsigned long long)st.dio,
           (unsigned long long)st.buffered);
  rc = pgd_chain_close (s.chain, &err) < 0 ? 1 : 0;
  s.chain = NULL;
  if (rc != 0)
    {
      pgd_log (PGD_LOG_ERROR, "%s", err.msg);
      snprintf (line, sizeof line, "error %s\n", err.msg);
      write_status (&s, line);
    }
  else
    {
      pgd_log (PGD_LOG_INFO, "closed %s cleanly", s.dd);
      write_status (&s, "clean\n");
    }
  free (s.owned_dd);
  free (s.owned_status);
  return rc;

fail:
  pgd_log (PGD_LOG_ERROR, "%s", err.msg);
  snprintf (line, sizeof line, "ERROR %s\n", err.msg);
  tell_ready (ready_fd, line);
  if (s.se)
    fuse_session_destroy (s.se);
  /* a chain opened before the failure is closed cleanly: nothing was written */
  if (s.chain && pgd_chain_close (s.chain, &err) < 0)
    pgd_log (PGD_LOG_ERROR, "%s", err.msg);
  snprintf (line, sizeof line, "error %s\n", err.msg);
  write_status (&s, line);
  return 1;
}
