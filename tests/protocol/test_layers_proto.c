/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Layer semantics over the socket, against the real binary and layer store
   (PROTOCOL.md §11.3 "Endpoint semantics" and "Restart and shutdown"): Create, Get/Put
   nesting, Remove, ApplyDiff in any chunking, Diff streaming into ApplyDiff, Changes,
   DiffSize, GetMetadata, restart without Init. Needs root, FUSE and loop devices. */
#include <archive.h>
#include <archive_entry.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto_client.h"
#include "util.h"

#define HEX64 "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f"
#define BUILDKIT "k4w3h8vq2n1m0p9o8i7u6y5t4"

static struct pc_server srv;
static char created[32][PGD_ID_MAX + 1];
static int ncreated;

static void
setup (void)
{
  ncreated = 0;
  cr_assert_eq (pc_start (&srv, true), 0, "the server did not start");
}

static void
teardown (void)
{
  /* Remove unmounts even held layers; pc_stop cleans whatever is left anyway */
  for (int i = ncreated - 1; i >= 0 && pc_alive (&srv); i--)
    {
      char body[PGD_ID_MAX + 16];
      struct pc_response r;
      snprintf (body, sizeof body, "{\"ID\":\"%s\"}\n", created[i]);
      if (pc_post (&srv, "/GraphDriver.Remove", body, &r) == 0)
        pc_response_free (&r);
    }
  pc_stop (&srv);
}

TestSuite (layers, .init = setup, .fini = teardown);

/* A test of this suite: BODY, then the server must exit 0 on SIGTERM, which is also how
   a sanitizer build of it reports leaks and errors (a failed check in .fini would not
   count in Criterion 2.4, so it is done here). */
#define LAYERS_TEST(name)                                                                          \
  static void name##_body (void);                                                                  \
  Test (layers, name)                                                                              \
  {                                                                                                \
    name##_body ();                                                                                \
    cr_assert_eq (pc_stop (&srv), 0, "the server did not exit cleanly on SIGTERM");                \
  }                                                                                                \
  static void name##_body (void)

/* POST BODY to PATH; expect 200 and return the parsed JSON object. */
static json_t *
call_ok (const char *path, const char *body)
{
  struct pc_response r;
  json_t *j;

  cr_assert_eq (pc_post (&srv, path, body, &r), 0, "POST %s: no response\n%s", path,
                pc_log_tail (&srv));
  cr_assert_eq (r.status, 200, "%s %s: status %d: %s\n%s", path, body, r.status,
                r.body ? r.body : "", pc_log_tail (&srv));
  cr_assert (r.closed, "%s: connection not closed", path);
  j = pc_json (&r);
  cr_assert (json_is_object (j), "%s: not a JSON object: %s", path, r.body);
  json_t *e = json_object_get (j, "Err");
  cr_assert (e == NULL || json_is_null (e) || (json_is_string (e) && !*json_string_value (e)),
             "%s: 200 with an Err: %s", path, r.body);
  pc_response_free (&r);
  return j;
}

/* POST BODY to PATH; expect 500 with an Err. */
static void
call_err (const char *path, const char *body)
{
  struct pc_response r;
  const char *msg;

  cr_assert_eq (pc_post (&srv, path, body, &r), 0, "POST %s: no response", path);
  msg = pc_json_str (&r, "Err");
  cr_assert_eq (r.status, 500, "%s %s must fail: status %d %s", path, body, r.status,
                r.body ? r.body : "");
  cr_assert (msg && *msg, "%s: no Err in %s", path, r.body);
  pc_response_free (&r);
}

static void
id_call_ok (const char *path, const char *id)
{
  char body[PGD_ID_MAX + 32];

  snprintf (body, sizeof body, "{\"ID\":\"%s\"}\n", id);
  json_decref (call_ok (path, body));
}

static void
create (const char *method, const char *id, const char *parent)
{
  char body[2 * PGD_ID_MAX + 64];

  if (parent)
    snprintf (body, sizeof body, "{\"ID\":\"%s\",\"Parent\":\"%s\"}\n", id, parent);
  else
    snprintf (body, sizeof body, "{\"ID\":\"%s\"}\n", id);
  json_t *j = call_ok (method, body);
  cr_assert_eq (json_object_size (j), 0, "Create answers {}");
  json_decref (j);
  if (ncreated < 32)
    snprintf (created[ncreated++], PGD_ID_MAX + 1, "%s", id);
}

/* Get ID; the returned Dir is an absolute directory. */
static void
get (const char *id, char *dir)
{
  char body[PGD_ID_MAX + 32];
  struct stat st;

  snprintf (body, sizeof body, "{\"ID\":\"%s\"}\n", id);
  json_t *j = call_ok ("/GraphDriver.Get", body);
  json_t *d = json_object_get (j, "Dir");
  cr_assert (json_is_string (d), "Get %s: no Dir", id);
  snprintf (dir, PATH_MAX, "%s", json_string_value (d));
  json_decref (j);
  cr_assert_eq (dir[0], '/', "Dir %s is not absolute", dir);
  cr_assert_eq (stat (dir, &st), 0, "Dir %s does not exist", dir);
  cr_assert (S_ISDIR (st.st_mode), "Dir %s is not a directory", dir);
}

static bool
exists (const char *id)
{
  char body[PGD_ID_MAX + 32];

  snprintf (body, sizeof body, "{\"ID\":\"%s\"}\n", id);
  json_t *j = call_ok ("/GraphDriver.Exists", body);
  json_t *e = json_object_get (j, "Exists");
  cr_assert (json_is_boolean (e), "Exists must be a boolean");
  bool ret = json_is_true (e);
  json_decref (j);
  return ret;
}

static void
write_file (const char *dir, const char *name, const char *data, size_t len)
{
  char path[PATH_MAX + 256];
  int fd;

  snprintf (path, sizeof path, "%s/%s", dir, name);
  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  cr_assert_geq (fd, 0, "create %s", path);
  for (size_t done = 0; done < len;)
    {
      ssize_t n = write (fd, data + done, len - done);
      cr_assert_gt (n, 0, "write %s", path);
      done += (size_t)n;
    }
  cr_assert_eq (close (fd), 0);
}

/* The content of DIR/NAME (malloc'd, NUL-terminated), or NULL when missing. */
static char *
read_file (const char *dir, const char *name, size_t *len)
{
  char path[PATH_MAX + 256];
  char *data;
  int fd;

  snprintf (path, sizeof path, "%s/%s", dir, name);
  fd = open (path, O_RDONLY);
  if (fd < 0)
    return NULL;
  struct stat st;
  fstat (fd, &st);
  data = malloc ((size_t)st.st_size + 1);
  ssize_t n = read (fd, data, (size_t)st.st_size);
  close (fd);
  cr_assert_eq (n, st.st_size);
  data[n] = '\0';
  if (len)
    *len = (size_t)n;
  return data;
}

/* A small layer tar: d/, d/f ("hello\n"), a (BIG bytes), s -> a. Size sum: 6 + BIG. */
static char *
make_tar (size_t big, size_t *len)
{
  size_t cap = big + 64 * 1024;
  char *buf = malloc (cap);
  char *data = malloc (big);
  struct archive *a = archive_write_new ();
  struct archive_entry *e = archive_entry_new ();

  for (size_t i = 0; i < big; i++)
    data[i] = (char)('A' + (i * 7) % 26);
  archive_write_set_format_pax_restricted (a);
  cr_assert_eq (archive_write_open_memory (a, buf, cap, len), ARCHIVE_OK);
  struct
  {
    const char *name;
    mode_t type;
    const char *data;
    size_t size;
  } entries[] = {
    { "d/", AE_IFDIR, NULL, 0 },
    { "d/f", AE_IFREG, "hello\n", 6 },
    { "a", AE_IFREG, data, big },
    { "s", AE_IFLNK, NULL, 0 },
  };
  for (size_t i = 0; i < 4; i++)
    {
      archive_entry_clear (e);
      archive_entry_set_pathname (e, entries[i].name);
      archive_entry_set_filetype (e, entries[i].type);
      archive_entry_set_perm (e, entries[i].type == AE_IFDIR ? 0755 : 0644);
      archive_entry_set_size (e, (la_int64_t)entries[i].size);
      archive_entry_set_mtime (e, 1700000000, 0);
      if (entries[i].type == AE_IFLNK)
        archive_entry_set_symlink (e, "a");
      cr_assert_eq (archive_write_header (a, e), ARCHIVE_OK, "%s", archive_error_string (a));
      if (entries[i].size)
        cr_assert_eq (archive_write_data (a, entries[i].data, entries[i].size),
                      (la_ssize_t)entries[i].size);
    }
  cr_assert_eq (archive_write_close (a), ARCHIVE_OK);
  archive_write_free (a);
  archive_entry_free (e);
  free (data);
  return buf;
}

/* ApplyDiff DATA to ID/PARENT: chunk sizes cycle through PATTERN (NULL: one chunk),
   GARBAGE extra bytes follow the tar. Every byte must be accepted before the answer. */
static void
apply_diff (const char *id, const char *parent, const char *data, size_t len, const size_t *pattern,
            size_t npattern, size_t garbage, struct pc_response *r)
{
  char head[1024];
  int fd = pc_connect (&srv);

  cr_assert_geq (fd, 0);
  snprintf (head, sizeof head,
            "POST /GraphDriver.ApplyDiff?id=%s&parent=%s HTTP/1.1\r\nHost: \r\nUser-Agent: "
            "Go-http-client/1.1\r\nTransfer-Encoding: chunked\r\nAccept: "
            "application/vnd.docker.plugins.v1.2+json\r\n\r\n",
            id, parent ? parent : "");
  cr_assert_eq (pc_send_all (fd, head, strlen (head)), 0);
  for (size_t off = 0, i = 0; off < len; i++)
    {
      size_t n = pattern ? pattern[i % npattern] : len;
      if (n > len - off)
        n = len - off;
      cr_assert_eq (pc_send_chunk (fd, data + off, n), 0, "chunk at %zu refused", off);
      off += n;
    }
  if (garbage > 0)
    {
      char *junk = malloc (garbage);
      memset (junk, 0x5a, garbage);
      cr_assert_eq (pc_send_chunk (fd, junk, garbage), 0, "trailing bytes refused");
      free (junk);
    }
  cr_assert_eq (pc_send_chunk (fd, NULL, 0), 0, "final chunk refused");
  cr_assert_eq (pc_read_response (fd, r), 0, "no answer to ApplyDiff");
  cr_assert (r->closed);
  close (fd);
}

/* ApplyDiff that must succeed; returns Size, which must be a JSON integer. */
static long long
apply_ok (const char *id, const char *parent, const char *data, size_t len, const size_t *pattern,
          size_t npattern, size_t garbage)
{
  struct pc_response r;

  apply_diff (id, parent, data, len, pattern, npattern, garbage, &r);
  cr_assert_eq (r.status, 200, "ApplyDiff %s: %d %s\n%s", id, r.status, r.body, pc_log_tail (&srv));
  json_t *j = pc_json (&r);
  json_t *size = json_object_get (j, "Size");
  cr_assert (json_is_integer (size), "Size must be a JSON integer: %s", r.body);
  long long ret = json_integer_value (size);
  json_decref (j);
  pc_response_free (&r);
  return ret;
}

static bool
all_zero (const char *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0)
      return false;
  return true;
}

static void
apply_fails (const char *id, const char *data, size_t len)
{
  struct pc_response r;

  apply_diff (id, NULL, data, len, NULL, 0, 0, &r);
  cr_assert_eq (r.status, 500, "ApplyDiff %s must fail: %d %s", id, r.status, r.body);
  cr_assert_not_null (pc_json_str (&r, "Err"), "no Err: %s", r.body);
  pc_response_free (&r);
}

LAYERS_TEST (create_get_put_remove)
{
  char dir[PATH_MAX], again[PATH_MAX];

  create ("/GraphDriver.Create", "Base", NULL);
  cr_assert (exists ("Base"));
  get ("Base", dir);
  write_file (dir, "hello", "hi\n", 3); /* every layer is writable through Get */
  get ("Base", again);
  cr_assert_str_eq (again, dir, "Get must return a stable path");
  id_call_ok ("/GraphDriver.Put", "Base");
  id_call_ok ("/GraphDriver.Put", "Base");
  id_call_ok ("/GraphDriver.Remove", "Base");
  cr_assert_not (exists ("Base"));
}

LAYERS_TEST (get_put_nesting)
{
  char dir[PATH_MAX];

  create ("/GraphDriver.CreateReadWrite", "nest", NULL);
  get ("nest", dir);
  get ("nest", dir);
  id_call_ok ("/GraphDriver.Put", "nest");
  cr_assert (pgd_is_mountpoint (dir), "one Get still holds %s", dir);
  id_call_ok ("/GraphDriver.Put", "nest");
  /* the last Put leaves the mount idle for --linger (2 s by default), then it goes;
     the wait is bounded by PC_SAFETY_MS, not a performance limit */
  for (int ms = 0; ms < PC_SAFETY_MS && pgd_is_mountpoint (dir); ms += 50)
    usleep (50 * 1000);
  cr_assert_not (pgd_is_mountpoint (dir), "the idle mount %s was never taken down", dir);
  id_call_ok ("/GraphDriver.Put", "nest"); /* a third Put: still {} */
}

LAYERS_TEST (remove_and_put_of_unknown_ids_succeed)
{
  id_call_ok ("/GraphDriver.Remove", "never-created");
  id_call_ok ("/GraphDriver.Put", "never-created");
  id_call_ok ("/GraphDriver.Remove", HEX64);
}

LAYERS_TEST (odd_but_valid_ids)
{
  char dir[PATH_MAX];

  create ("/GraphDriver.Create", HEX64, NULL);
  create ("/GraphDriver.CreateReadWrite", HEX64 "-init", HEX64);
  create ("/GraphDriver.Create", BUILDKIT, HEX64 "-init");
  get (BUILDKIT, dir);
  id_call_ok ("/GraphDriver.Put", BUILDKIT);
  cr_assert (exists (HEX64 "-init"));
}

LAYERS_TEST (invalid_ids_change_nothing)
{
  create ("/GraphDriver.Create", "keep", NULL);
  call_err ("/GraphDriver.Create", "{\"ID\":\"a/b\"}\n");
  call_err ("/GraphDriver.Create", "{\"ID\":\"..\"}\n");
  call_err ("/GraphDriver.Create", "{\"ID\":\"\"}\n");
  call_err ("/GraphDriver.Remove", "{\"ID\":\"\"}\n");
  call_err ("/GraphDriver.Remove", "{\"ID\":\"..\"}\n");
  call_err ("/GraphDriver.Create", "{\"ID\":\"x\",\"Parent\":\"../keep\"}\n");
  cr_assert (exists ("keep"), "a rejected request removed a layer");
  cr_assert_not (exists ("x"));
}

LAYERS_TEST (create_errors)
{
  create ("/GraphDriver.Create", "dup", NULL);
  call_err ("/GraphDriver.Create", "{\"ID\":\"dup\"}\n");
  call_err ("/GraphDriver.Create", "{\"ID\":\"orphan\",\"Parent\":\"no-such-parent\"}\n");
  cr_assert_not (exists ("orphan"));
}

LAYERS_TEST (applydiff_unpacks_and_sizes)
{
  char dir[PATH_MAX];
  size_t len;
  char *tar = make_tar (1000, &len);

  create ("/GraphDriver.Create", "img", NULL);
  cr_assert_eq (apply_ok ("img", NULL, tar, len, NULL, 0, 0), 1006, "Size = sum of entries");
  get ("img", dir);
  char *f = read_file (dir, "d/f", NULL);
  cr_assert_not_null (f);
  cr_assert_str_eq (f, "hello\n");
  size_t alen;
  char *a = read_file (dir, "a", &alen);
  cr_assert_eq (alen, 1000);
  cr_assert_eq (a[999], (char)('A' + (999 * 7) % 26));
  free (a);
  free (f);
  id_call_ok ("/GraphDriver.Put", "img");
  free (tar);
}

LAYERS_TEST (applydiff_chunking_does_not_matter)
{
  static const size_t p512[] = { 512 };
  static const size_t mixed[] = { 512, 27, 485, 512, 512, 28 };
  static const size_t odd[] = { 1, 3, 7, 4093, 11, 999 };
  const char *ids[] = { "one-chunk", "chunks-512", "chunks-mixed", "chunks-odd" };
  const size_t *patterns[] = { NULL, p512, mixed, odd };
  const size_t npat[] = { 0, 1, 6, 6 };
  size_t len;
  char *tar = make_tar (300 * 1024 + 7, &len);
  char *first = NULL;
  size_t first_len = 0;

  for (int i = 0; i < 4; i++)
    {
      char dir[PATH_MAX];
      size_t alen;
      create ("/GraphDriver.Create", ids[i], NULL);
      cr_assert_eq (apply_ok (ids[i], "", tar, len, patterns[i], npat[i], 0), 300 * 1024 + 13, "%s",
                    ids[i]);
      get (ids[i], dir);
      char *a = read_file (dir, "a", &alen);
      cr_assert_not_null (a, "%s: a missing", ids[i]);
      if (first == NULL)
        {
          first = a;
          first_len = alen;
        }
      else
        {
          cr_assert_eq (alen, first_len, "%s: size differs", ids[i]);
          cr_assert (memcmp (a, first, alen) == 0, "%s: content differs", ids[i]);
          free (a);
        }
      id_call_ok ("/GraphDriver.Put", ids[i]);
    }
  free (first);
  free (tar);
}

LAYERS_TEST (applydiff_trailing_bytes_consumed)
{
  size_t len;
  char *tar = make_tar (100, &len);

  create ("/GraphDriver.Create", "trail", NULL);
  cr_assert_eq (apply_ok ("trail", "", tar, len, NULL, 0, 64 * 1024 + 3), 106);
  free (tar);
}

LAYERS_TEST (applydiff_only_once)
{
  size_t len;
  char *tar = make_tar (10, &len);

  create ("/GraphDriver.Create", "once", NULL);
  cr_assert_eq (apply_ok ("once", NULL, tar, len, NULL, 0, 0), 16);
  apply_fails ("once", tar, len);
  free (tar);
}

LAYERS_TEST (applydiff_truncated_rejected)
{
  size_t len;
  char *tar = make_tar (64 * 1024, &len);

  create ("/GraphDriver.Create", "cut-data", NULL);
  apply_fails ("cut-data", tar, 3 * 512 + 1000); /* inside the data of "a" */
  create ("/GraphDriver.Create", "cut-end", NULL);
  /* every entry, but not the end-of-archive blocks: drop the trailing zero blocks */
  size_t end = len;
  while (end >= 512 && all_zero (tar + end - 512, 512))
    end -= 512;
  cr_assert_lt (end, len);
  apply_fails ("cut-end", tar, end);
  free (tar);
}

LAYERS_TEST (applydiff_unknown_layer_rejected)
{
  size_t len;
  char *tar = make_tar (10, &len);

  apply_fails ("not-created", tar, len);
  free (tar);
}

/* Base "b" with make_tar's content; child "c" on it with new.txt (NEWLEN bytes) added
   and "a" deleted. */
static void
make_base_and_child (size_t newlen)
{
  char dir[PATH_MAX];
  size_t len;
  char *tar = make_tar (1000, &len);
  char *data = malloc (newlen);

  for (size_t i = 0; i < newlen; i++)
    data[i] = (char)(i * 31 + 7);
  create ("/GraphDriver.Create", "b", NULL);
  apply_ok ("b", NULL, tar, len, NULL, 0, 0);
  create ("/GraphDriver.CreateReadWrite", "c", "b");
  get ("c", dir);
  write_file (dir, "new.txt", data, newlen);
  char path[PATH_MAX + 8];
  snprintf (path, sizeof path, "%s/a", dir);
  cr_assert_eq (unlink (path), 0, "rm %s", path);
  id_call_ok ("/GraphDriver.Put", "c");
  free (data);
  free (tar);
}

/* Entry names of the tar in DATA, "|"-joined with a leading "|", into OUT. */
static void
tar_names (const char *data, size_t len, char *out, size_t cap, long long *newlen)
{
  struct archive *a = archive_read_new ();
  struct archive_entry *e;

  archive_read_support_format_tar (a);
  cr_assert_eq (archive_read_open_memory (a, data, len), ARCHIVE_OK);
  out[0] = '\0';
  while (archive_read_next_header (a, &e) == ARCHIVE_OK)
    {
      size_t n = strlen (out);
      snprintf (out + n, cap - n, "|%s", archive_entry_pathname (e));
      if (strcmp (archive_entry_pathname (e), "new.txt") == 0)
        *newlen = archive_entry_size (e);
    }
  cr_assert_eq (archive_read_free (a), ARCHIVE_OK);
}

LAYERS_TEST (diff_is_a_chunked_tar_with_whiteouts)
{
  struct pc_response r;
  char names[4096];
  long long newlen = -1;

  make_base_and_child (5000);
  cr_assert_eq (pc_post (&srv, "/GraphDriver.Diff", "{\"ID\":\"c\",\"Parent\":\"b\"}\n", &r), 0);
  cr_assert_eq (r.status, 200, "Diff: %d %s", r.status, r.body);
  cr_assert (r.chunked, "Diff must be chunked");
  cr_assert (r.complete, "Diff must end with the final chunk");
  cr_assert_str_eq (pc_header (&r, "Connection"), "close");
  tar_names (r.body, r.body_len, names, sizeof names, &newlen);
  cr_assert (strstr (names, "|new.txt") != NULL, "entries: %s", names);
  cr_assert (strstr (names, "|.wh.a") != NULL, "the deletion needs a whiteout: %s", names);
  cr_assert_eq (newlen, 5000);
  pc_response_free (&r);
}

LAYERS_TEST (diff_error_before_streaming_is_500)
{
  call_err ("/GraphDriver.Diff", "{\"ID\":\"no-such-layer\"}\n");
}

LAYERS_TEST (changes_and_diffsize)
{
  size_t i;
  json_t *c;
  bool added = false, deleted = false;

  make_base_and_child (4321);
  json_t *j = call_ok ("/GraphDriver.Changes", "{\"ID\":\"c\",\"Parent\":\"b\"}\n");
  json_t *changes = json_object_get (j, "Changes");
  cr_assert (json_is_array (changes));
  json_array_foreach (changes, i, c)
  {
    const char *path = json_string_value (json_object_get (c, "Path"));
    json_t *kind = json_object_get (c, "Kind");
    cr_assert (path && json_is_integer (kind), "bad change entry");
    added |= strcmp (path, "/new.txt") == 0 && json_integer_value (kind) == 1;
    deleted |= strcmp (path, "/a") == 0 && json_integer_value (kind) == 2;
  }
  cr_assert (added && deleted, "Changes: %s", json_dumps (j, JSON_COMPACT));
  json_decref (j);
  j = call_ok ("/GraphDriver.DiffSize", "{\"ID\":\"c\",\"Parent\":\"b\"}\n");
  cr_assert (json_is_integer (json_object_get (j, "Size")), "Size must be an integer");
  cr_assert_eq (json_integer_value (json_object_get (j, "Size")), 4321);
  json_decref (j);
}

LAYERS_TEST (metadata_values_are_strings)
{
  const char *key;
  json_t *v;

  create ("/GraphDriver.Create", "meta", NULL);
  json_t *j = call_ok ("/GraphDriver.GetMetadata", "{\"ID\":\"meta\"}\n");
  json_t *md = json_object_get (j, "Metadata");
  cr_assert (md == NULL || json_is_object (md), "Metadata must be an object");
  json_object_foreach (md, key, v)
      cr_assert (json_is_string (v), "Metadata %s is not a string", key);
  json_decref (j);
}

/* commit: Diff streams on connection A while B runs Create + ApplyDiff of that very
   stream, chunk by chunk. A server that serves one connection at a time deadlocks. */
LAYERS_TEST (diff_streams_into_applydiff)
{
  static const char dbody[] = "{\"ID\":\"c\",\"Parent\":\"b\"}\n";
  char dreq[256];
  const size_t big = 8 * 1024 * 1024; /* well past pipe and socket buffers */
  struct pc_reader *rd = malloc (sizeof *rd);
  struct pc_response head, r;
  char *buf = malloc (65536);
  char bhead[512];
  ssize_t n;

  make_base_and_child (big);
  int a = pc_connect (&srv);
  cr_assert_geq (a, 0);
  snprintf (dreq, sizeof dreq,
            "POST /GraphDriver.Diff HTTP/1.1\r\nHost: \r\nContent-Length: %zu\r\n\r\n%s",
            sizeof dbody - 1, dbody);
  cr_assert_eq (pc_send_all (a, dreq, strlen (dreq)), 0);
  cr_assert_eq (pc_read_head (rd, a, &head), 0, "Diff headers");
  cr_assert_eq (head.status, 200);
  cr_assert (head.chunked);
  create ("/GraphDriver.Create", "committed", "b"); /* while A is mid-stream */
  int b = pc_connect (&srv);
  cr_assert_geq (b, 0);
  snprintf (bhead, sizeof bhead,
            "POST /GraphDriver.ApplyDiff?id=committed&parent=b HTTP/1.1\r\nHost: \r\n"
            "Transfer-Encoding: chunked\r\n\r\n");
  cr_assert_eq (pc_send_all (b, bhead, strlen (bhead)), 0);
  while ((n = pc_read_chunk (rd, buf, 65536)) > 0)
    cr_assert_eq (pc_send_chunk (b, buf, (size_t)n), 0);
  cr_assert_eq (n, 0, "the Diff stream was cut");
  cr_assert_eq (pc_send_chunk (b, NULL, 0), 0);
  cr_assert_eq (pc_read_response (b, &r), 0);
  cr_assert_eq (r.status, 200, "ApplyDiff of the Diff: %d %s", r.status, r.body);
  json_t *j = pc_json (&r);
  cr_assert (json_is_integer (json_object_get (j, "Size")));
  cr_assert_eq (json_integer_value (json_object_get (j, "Size")), (json_int_t)big);
  json_decref (j);
  pc_response_free (&r);
  pc_response_free (&head);
  close (a);
  close (b);

  char dir[PATH_MAX];
  size_t len;
  get ("committed", dir);
  char *data = read_file (dir, "new.txt", &len);
  cr_assert_not_null (data, "new.txt missing in the committed layer");
  cr_assert_eq (len, big);
  cr_assert_eq (data[big - 1], (char)((big - 1) * 31 + 7));
  cr_assert_null (read_file (dir, "a", NULL), "the whiteout must delete a");
  free (data);
  id_call_ok ("/GraphDriver.Put", "committed");
  free (buf);
  free (rd);
}

LAYERS_TEST (restart_without_init_keeps_serving)
{
  char body[PATH_MAX + 128];
  int status;

  snprintf (body, sizeof body,
            "{\"Home\":\"%s\",\"Opts\":null,\"UIDMaps\":null,\"GIDMaps\":null}\n", srv.home);
  json_decref (call_ok ("/GraphDriver.Init", body));
  create ("/GraphDriver.Create", "persisted", NULL);
  cr_assert_eq (pc_signal_and_wait (&srv, SIGTERM, PC_SAFETY_MS, &status), 0);
  cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0);
  /* no --home and no Init this time: the state file has to be enough */
  cr_assert_eq (pc_spawn (&srv, false), 0, "restart failed");
  cr_assert (exists ("persisted"), "the restarted server lost the layer");
  create ("/GraphDriver.Create", "after-restart", "persisted");
}
