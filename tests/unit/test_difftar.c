/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Diff (pgd_diff_write): the tar read back with libarchive (names, types, whiteouts,
   hardlinks, times, capability xattr, skipped sockets, mapped owners), graphtest's
   DiffApply consistency with DiffSize, whole-tree diffs, a consumer that goes away,
   and a commit-like round trip between ext4 clones. */
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>

#include "diffkit.h"

TestSuite (difftar, .init = kit_setup, .fini = kit_teardown);

static const unsigned char cap_v2[20] = { 0x01, 0x00, 0x00, 0x02, 0x00, 0x04 };

/* Diff of NEW against OLD into a file, read back into memory (caller frees). */
static char *
diff_to_buf (const char *new_root, const char *old_root, const struct pgd_idmaps *maps, size_t *len)
{
  char path[PATH_MAX + 32];
  struct pgd_err err = { 0 };
  struct stat st;

  snprintf (path, sizeof path, "%s/diff-%d.tar", kit_dir, rand ());
  int fd = open (path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  cr_assert_geq (fd, 0);
  int r = pgd_diff_write (new_root, old_root, fd, maps, &err);
  cr_assert_eq (r, 0, "diff: %s", err.msg);
  cr_assert_eq (fstat (fd, &st), 0);
  char *buf = malloc (st.st_size + 1);
  cr_assert_not_null (buf);
  cr_assert_eq (pread (fd, buf, st.st_size, 0), st.st_size);
  close (fd);
  unlink (path);
  *len = st.st_size;
  return buf;
}

struct seen
{
  char name[256];
  mode_t type;
  mode_t perm;
  int64_t size;
  char link[256]; /* hardlink target, or symlink target */
  bool hardlink;
  time_t mtime;
  long mtime_nsec;
  bool atime, ctime;
  int64_t uid, gid;
  char cap[64];
  size_t caplen;
};

/* Parse BUF with libarchive into at most MAX entries; returns the count. */
static size_t
parse (const char *buf, size_t len, struct seen *out, size_t max)
{
  struct archive *a = archive_read_new ();
  struct archive_entry *e;
  size_t n = 0;

  archive_read_support_format_tar (a);
  cr_assert_eq (archive_read_open_memory (a, buf, len), ARCHIVE_OK);
  int r;
  while ((r = archive_read_next_header (a, &e)) == ARCHIVE_OK)
    {
      cr_assert_lt (n, max);
      struct seen *s = &out[n++];
      memset (s, 0, sizeof *s);
      snprintf (s->name, sizeof s->name, "%s", archive_entry_pathname (e));
      s->type = archive_entry_filetype (e);
      s->perm = archive_entry_perm (e);
      s->size = archive_entry_size (e);
      s->hardlink = archive_entry_hardlink (e) != NULL;
      if (s->hardlink)
        snprintf (s->link, sizeof s->link, "%s", archive_entry_hardlink (e));
      else if (archive_entry_symlink (e))
        snprintf (s->link, sizeof s->link, "%s", archive_entry_symlink (e));
      s->mtime = archive_entry_mtime (e);
      s->mtime_nsec = archive_entry_mtime_nsec (e);
      s->atime = archive_entry_atime_is_set (e);
      s->ctime = archive_entry_ctime_is_set (e);
      s->uid = archive_entry_uid (e);
      s->gid = archive_entry_gid (e);
      const char *xn;
      const void *xv;
      size_t xl;
      archive_entry_xattr_reset (e);
      while (archive_entry_xattr_next (e, &xn, &xv, &xl) == ARCHIVE_OK)
        if (strcmp (xn, "security.capability") == 0 && xl <= sizeof s->cap)
          {
            memcpy (s->cap, xv, xl);
            s->caplen = xl;
          }
    }
  cr_assert_eq (r, ARCHIVE_EOF, "tar read back: %s", archive_error_string (a));
  archive_read_free (a);
  return n;
}

static bool
contains (const char *buf, size_t len, const char *needle)
{
  return memmem (buf, len, needle, strlen (needle)) != NULL;
}

static void
make_socket (const char *path)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM, 0);
  cr_assert_geq (fd, 0);
  snprintf (sa.sun_path, sizeof sa.sun_path, "%s", path);
  cr_assert_eq (bind (fd, (struct sockaddr *)&sa, sizeof sa), 0, "bind %s", path);
  close (fd);
}

Test (difftar, format_of_entries)
{
  struct timespec ts[2] = { { 1600000000, 0 }, { 1600000000, 987654321 } };
  struct seen s[32];
  size_t len;

  kit_mkdir (kit_path ("base"), 0755);
  kit_mkdir (kit_path ("base/keep"), 0755);
  kit_write (kit_path ("base/keep/old"), "old", 0644);
  kit_mkdir (kit_path ("base/gone"), 0755);
  kit_write (kit_path ("base/gone/x"), "x", 0644);
  kit_write (kit_path ("base/del"), "del", 0644);
  kit_sh ("cp -a %s %s", kit_path ("base"), kit_path ("new"));
  kit_sh ("cd %s && rm -r gone del && mkdir -m 0750 d && echo -n hello > d/f && ln d/f d/h"
          " && ln -s f d/l && mkfifo -m 0640 p && mknod c c 1 3 && echo new > keep/new"
          " && echo -n cap > capf && chown 5:6 d/f",
          kit_path ("new"));
  make_socket (kit_path ("new/sock"));
  cr_assert_eq (utimensat (AT_FDCWD, kit_path ("new/d/f"), ts, 0), 0);
  cr_assert_eq (setxattr (kit_path ("new/capf"), "security.capability", cap_v2, sizeof cap_v2, 0),
                0);

  char *buf = diff_to_buf (kit_path ("new"), kit_path ("base"), NULL, &len);
  size_t n = parse (buf, len, s, 32);
  const char *names[]
      = { "c", "capf", "d/", "d/f", "d/h", "d/l", ".wh.del", ".wh.gone", "keep/", "keep/new", "p" };
  cr_assert_eq (n, sizeof names / sizeof *names, "%zu entries", n);
  for (size_t i = 0; i < n; i++)
    {
      cr_expect_str_eq (s[i].name, names[i], "entry %zu", i);
      cr_expect_eq (s[i].mtime_nsec, 0, "%s: whole seconds", s[i].name);
      cr_expect (!s[i].atime && !s[i].ctime, "%s: no atime/ctime", s[i].name);
    }
  cr_expect_eq (s[0].type, AE_IFCHR);
  cr_expect_eq (s[2].type, AE_IFDIR);
  cr_expect_eq (s[2].perm, 0750);
  cr_expect_eq (s[3].type, AE_IFREG);
  cr_expect_eq (s[3].size, 5);
  cr_expect_eq (s[3].mtime, 1600000000);
  cr_expect_eq (s[3].uid, 5);
  cr_expect_eq (s[3].gid, 6);
  cr_expect (s[4].hardlink, "second path of an inode is a hardlink");
  cr_expect_str_eq (s[4].link, "d/f");
  cr_expect_eq (s[4].size, 0);
  cr_expect_eq (s[5].type, AE_IFLNK);
  cr_expect_str_eq (s[5].link, "f");
  for (size_t i = 6; i < 8; i++)
    {
      cr_expect_eq (s[i].type, AE_IFREG);
      cr_expect_eq (s[i].size, 0);
    }
  cr_expect_eq (s[10].type, AE_IFIFO);
  cr_expect_eq (s[1].caplen, sizeof cap_v2);
  cr_expect (memcmp (s[1].cap, cap_v2, sizeof cap_v2) == 0);
  cr_expect (contains (buf, len, "SCHILY.xattr.security.capability"));
  cr_expect (!contains (buf, len, "LIBARCHIVE.xattr"));
  cr_expect (!contains (buf, len, "sock"), "sockets are skipped");
  cr_expect_eq (len % 512, 0);
  cr_assert_geq (len, 1024);
  static const char zeros[1024];
  cr_expect (memcmp (buf + len - 1024, zeros, 1024) == 0, "end-of-archive blocks");
  free (buf);
}

static void
random_file (const char *path, size_t len)
{
  char data[256];
  cr_assert_leq (len, sizeof data - 1);
  for (size_t i = 0; i < len; i++)
    data[i] = 'a' + rand () % 26;
  data[len] = '\0';
  kit_write (path, data, 0755);
}

/* graphtest's DiffApply(10). */
Test (difftar, graphtest_diff_apply)
{
  struct pgd_err err = { 0 };
  int64_t diff_size = -1, applied = -1;
  size_t len;

  srand (10);
  kit_mkdir (kit_path ("base"), 0755);
  kit_mkdir (kit_path ("base/directory-0"), 0755);
  for (int i = 0; i < 10; i++)
    random_file (kit_path ("base/directory-0/file-%d", i), 64);
  random_file (kit_path ("base/file-remove.txt"), 38);
  kit_sh ("mkdir -p %s/var/lib", kit_path ("base"));
  kit_sh ("cp -a %s %s", kit_path ("base"), kit_path ("upper"));
  for (int i = 0; i < 10; i++)
    random_file (kit_path ("upper/directory-0/file-%d", i), 64);
  kit_sh ("rm %s/file-remove.txt && rmdir %s/var/lib", kit_path ("upper"), kit_path ("upper"));

  cr_assert_eq (pgd_diff_size (kit_path ("upper"), NULL, &diff_size, &err), 0, "%s", err.msg);
  kit_sh ("cp -a %s %s", kit_path ("base"), kit_path ("diff"));
  cr_assert (kit_exists (kit_path ("diff/file-remove.txt")));
  char *tar = diff_to_buf (kit_path ("upper"), kit_path ("base"), NULL, &len);
  cr_assert_eq (kit_apply (kit_path ("diff"), tar, len, &applied, &err), 0, "%s", err.msg);
  free (tar);
  cr_expect_eq (applied, diff_size, "ApplyDiff size %lld != DiffSize %lld", (long long)applied,
                (long long)diff_size);
  cr_expect_eq (diff_size, 640);
  for (int i = 0; i < 10; i++)
    kit_sh ("cmp -s %s %s", kit_path ("upper/directory-0/file-%d", i),
            kit_path ("diff/directory-0/file-%d", i));
  cr_expect (!kit_exists (kit_path ("diff/file-remove.txt")));
  cr_expect (!kit_exists (kit_path ("diff/var/lib")));
  char *c = kit_changes (kit_path ("diff"), kit_path ("upper"));
  cr_expect_str_eq (c, "", "applied differs from upper:\n%s", c);
  free (c);
}

Test (difftar, whole_tree_without_parent)
{
  struct pgd_err err = { 0 };
  int64_t size = -1, want = -1;
  size_t len;

  kit_mkdir (kit_path ("new"), 0755);
  kit_mkdir (kit_path ("new/lost+found"), 0700);
  kit_sh ("cd %s && mkdir -p a/b && echo one > a/b/f && ln a/b/f g && ln -s a/b l"
          " && chmod 4711 a/b/f",
          kit_path ("new"));
  char *tar = diff_to_buf (kit_path ("new"), NULL, NULL, &len);
  cr_expect (!contains (tar, len, "lost+found"));
  kit_mkdir (kit_path ("copy"), 0755);
  cr_assert_eq (kit_apply (kit_path ("copy"), tar, len, &size, &err), 0, "%s", err.msg);
  free (tar);
  cr_assert_eq (pgd_diff_size (kit_path ("new"), NULL, &want, &err), 0, "%s", err.msg);
  cr_expect_eq (size, 4, "one hardlinked file of 4 bytes");
  cr_expect_eq (want, 4 + 3, "DiffSize also counts the symlink's length");
  char *c = kit_changes (kit_path ("copy"), kit_path ("new"));
  cr_expect_str_eq (c, "", "round trip differs:\n%s", c);
  free (c);
  struct stat a, b;
  cr_assert_eq (lstat (kit_path ("copy/a/b/f"), &a), 0);
  cr_assert_eq (lstat (kit_path ("copy/g"), &b), 0);
  cr_expect_eq (a.st_ino, b.st_ino, "the hardlink survives the round trip");
}

Test (difftar, owners_are_mapped_back)
{
  struct pgd_idmap uid = { 0, 100000, 65536 }, gid = { 0, 100000, 65536 };
  struct pgd_idmaps maps = { &uid, 1, &gid, 1 };
  struct pgd_err err = { 0 };
  struct seen s[4];
  size_t len;

  kit_mkdir (kit_path ("new"), 0755);
  kit_write (kit_path ("new/f"), "f", 0644);
  cr_assert_eq (chown (kit_path ("new/f"), 100005, 100007), 0);
  char *tar = diff_to_buf (kit_path ("new"), NULL, &maps, &len);
  cr_assert_eq (parse (tar, len, s, 4), 1);
  cr_expect_eq (s[0].uid, 5);
  cr_expect_eq (s[0].gid, 7);
  free (tar);

  cr_assert_eq (chown (kit_path ("new/f"), 3, 3), 0);
  int fd = open (kit_path ("out.tar"), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  cr_expect_neq (pgd_diff_write (kit_path ("new"), NULL, fd, &maps, &err), 0);
  cr_expect (strstr (err.msg, "/f") != NULL, "names the file: %s", err.msg);
  close (fd);
}

/* Long names, non-ASCII names (UTF-8 and not), deep paths: Diff then apply. */
Test (difftar, names_round_trip)
{
  struct pgd_err err = { 0 };
  int64_t size;
  size_t len;
  char longname[220];

  memset (longname, 'L', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  kit_mkdir (kit_path ("new"), 0755);
  kit_write (kit_path ("new/h\xc3\xa9llo"), "utf8", 0644);
  kit_write (kit_path ("new/caf\xe9"), "latin1", 0644);
  kit_write (kit_path ("new/%s", longname), "long", 0644);
  kit_sh ("mkdir -p %s/deep/%s/%s && echo deep > %s/deep/%s/%s/f", kit_path ("new"), longname,
          longname, kit_path ("new"), longname, longname);
  kit_sh ("ln -s deep/%s %s/ln", longname, kit_path ("new"));
  char *tar = diff_to_buf (kit_path ("new"), NULL, NULL, &len);
  kit_mkdir (kit_path ("copy"), 0755);
  cr_assert_eq (kit_apply (kit_path ("copy"), tar, len, &size, &err), 0, "%s", err.msg);
  free (tar);
  char *c = kit_changes (kit_path ("copy"), kit_path ("new"));
  cr_expect_str_eq (c, "", "round trip differs:\n%s", c);
  free (c);
  cr_expect_str_eq (kit_read (kit_path ("copy/caf\xe9")), "latin1");
}

struct slow_reader
{
  int fd;
  size_t limit;
};

static void *
read_then_quit (void *opaque)
{
  struct slow_reader *r = opaque;
  char buf[4096];
  size_t got = 0;

  while (got < r->limit)
    {
      ssize_t n = read (r->fd, buf, sizeof buf);
      if (n <= 0)
        break;
      got += n;
    }
  close (r->fd);
  return NULL;
}

/* The consumer disconnects: an error (EPIPE), promptly, and no SIGPIPE death. */
Test (difftar, consumer_goes_away)
{
  struct pgd_err err = { 0 };
  struct slow_reader r = { .limit = 100000 };
  pthread_t th;
  int p[2];

  signal (SIGPIPE, SIG_DFL);
  kit_mkdir (kit_path ("new"), 0755);
  kit_sh ("head -c 20000000 /dev/zero > %s/big && for i in $(seq 50); do echo $i > %s/f$i; done",
          kit_path ("new"), kit_path ("new"));
  cr_assert_eq (pipe2 (p, O_CLOEXEC), 0);
  r.fd = p[0];
  cr_assert_eq (pthread_create (&th, NULL, read_then_quit, &r), 0);
  int ret = pgd_diff_write (kit_path ("new"), NULL, p[1], NULL, &err);
  pthread_join (th, NULL);
  close (p[1]);
  cr_expect_neq (ret, 0);
  cr_expect_eq (err.errnum, EPIPE, "%s", err.msg);
  cr_log_info ("consumer gone: %s", err.msg);

  /* and with nobody there from the start */
  cr_assert_eq (pipe2 (p, O_CLOEXEC), 0);
  close (p[0]);
  ret = pgd_diff_write (kit_path ("new"), NULL, p[1], NULL, &err);
  close (p[1]);
  cr_expect_neq (ret, 0);
  cr_expect_eq (err.errnum, EPIPE, "%s", err.msg);
  signal (SIGPIPE, SIG_IGN);
}

/* docker commit on the real layout: Diff between ext4 clones applied to a third. */
Test (difftar, ext4_commit_round_trip)
{
  struct pgd_err err = { 0 };
  int64_t size = -1;
  size_t len;
  char base[PATH_MAX], new[PATH_MAX], target[PATH_MAX];

  snprintf (base, sizeof base, "%s", kit_path ("base"));
  snprintf (new, sizeof new, "%s", kit_path ("new"));
  snprintf (target, sizeof target, "%s", kit_path ("target"));
  kit_ext4_make (kit_path ("base.img"), 64);
  kit_ext4_mount (kit_path ("base.img"), base, false);
  kit_sh ("cd %s && mkdir -p bin etc/skel var/log && echo bb > bin/busybox && ln bin/busybox bin/sh"
          " && ln -s busybox bin/ls && echo root > etc/passwd && echo x > etc/skel/.profile"
          " && echo log > var/log/old && chown -R 10:20 var",
          base);
  kit_ext4_umount (base);
  kit_sh ("cp --sparse=always %s %s && cp --sparse=always %s %s", kit_path ("base.img"),
          kit_path ("new.img"), kit_path ("base.img"), kit_path ("target.img"));
  kit_ext4_mount (kit_path ("base.img"), base, true);
  kit_ext4_mount (kit_path ("new.img"), new, false);
  kit_ext4_mount (kit_path ("target.img"), target, false);
  kit_sh ("cd %s && echo hello > hello && rm bin/ls && mkdir -p d/e && rm -r etc/skel"
          " && echo more >> etc/passwd && chmod 700 var/log && ln hello d/e/hl",
          new);
  char *tar = diff_to_buf (new, base, NULL, &len);
  cr_assert_eq (kit_apply (target, tar, len, &size, &err), 0, "%s", err.msg);
  free (tar);
  char *c = kit_changes (target, new);
  cr_expect_str_eq (c, "", "target differs from the committed layer:\n%s", c);
  free (c);
  kit_sh ("diff -r --no-dereference -x lost+found %s %s", new, target);
  c = kit_changes (target, base);
  cr_expect_str_eq (c,
                    "C /bin\nD /bin/ls\nA /d\nA /d/e\nA /d/e/hl\nC /etc\nC /etc/passwd\n"
                    "D /etc/skel\nA /hello\nC /var\nC /var/log\n",
                    "%s", c);
  free (c);
  int64_t want = -1;
  cr_assert_eq (pgd_diff_size (new, base, &want, &err), 0, "%s", err.msg);
  cr_expect_eq (size, want, "ApplyDiff size %lld, DiffSize %lld", (long long)size, (long long)want);
}
