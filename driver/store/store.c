/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The layer store's open and close, Init, its persisted state, start-up recovery,
   Status and GetMetadata. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "initjson.h"
#include "internal.h"
#include "log.h"
#include "track.h"
#include "util.h"

#define EXT4_SUPER_MAGIC_ 0xEF53

static const char *const home_subdirs[] = { "layers", "mnt", "run", "staging", "templates" };

/* Parse one "ploop.key=value" daemon option into the store. */
static int
apply_option (struct pgd_layers *l, const char *opt, struct pgd_err *err)
{
  const char *eq = strchr (opt, '=');
  uint64_t v;

  if (eq == NULL)
    return pgd_error (err, 0, "storage option \"%s\": expected key=value", opt);
  size_t klen = eq - opt;
  const char *val = eq + 1;
  if (strncmp (opt, "ploop.", 6) != 0)
    {
      pgd_log (PGD_LOG_WARN, "ignoring storage option %s (not a ploop.* option)", opt);
      return 0;
    }
  if (klen == 10 && strncmp (opt, "ploop.size", klen) == 0)
    {
      if (pgd_parse_size (val, &v, err) < 0)
        return pgd_error_wrap (err, "ploop.size");
      if (v < (64ULL << 20) || v > (2ULL << 40) - (64ULL << 20))
        return pgd_error (err, 0, "ploop.size=%s: must be between 64M and 2T", val);
      l->default_size = v;
      return 0;
    }
  if (klen == 15 && strncmp (opt, "ploop.blocksize", klen) == 0)
    {
      if (pgd_parse_size (val, &v, err) < 0)
        return pgd_error_wrap (err, "ploop.blocksize");
      if (v < (32U << 10) || v > (64U << 20) || (v & (v - 1)) != 0)
        return pgd_error (err, 0, "ploop.blocksize=%s: must be a power of two from 32K to 64M",
                          val);
      l->cluster = (uint32_t)v;
      return 0;
    }
  if (klen == 12 && strncmp (opt, "ploop.engine", klen) == 0)
    {
      if (strcmp (val, "auto") && strcmp (val, "user") && strcmp (val, "kernel"))
        return pgd_error (err, 0, "ploop.engine=%s: must be auto, user or kernel", val);
      snprintf (l->engine_name, sizeof l->engine_name, "%s", val);
      if (pgd_engine_setup (&l->engine, l->engine_name, l->exe, err) < 0)
        return -1;
      l->engine.stall_ms = l->stall_ms;
      return 0;
    }
  return pgd_error (err, 0, "unknown storage option %.*s", (int)klen, opt);
}

static json_t *
maps_to_json (const struct pgd_idmap *m, size_t n)
{
  json_t *a = json_array ();
  for (size_t i = 0; i < n; i++)
    json_array_append_new (a, json_pack ("{s:I,s:I,s:I}", "container_id",
                                         (json_int_t)m[i].container_id, "host_id",
                                         (json_int_t)m[i].host_id, "size", (json_int_t)m[i].size));
  return a;
}

static int
copy_maps (struct pgd_idmap **dst, size_t *ndst, const struct pgd_idmap *src, size_t n,
           struct pgd_err *err)
{
  free (*dst);
  *dst = NULL;
  *ndst = 0;
  if (n == 0)
    return 0;
  *dst = calloc (n, sizeof **dst);
  if (*dst == NULL)
    return pgd_error (err, ENOMEM, "ID maps");
  memcpy (*dst, src, n * sizeof **dst);
  *ndst = n;
  return 0;
}

static int
persist (struct pgd_layers *l, const struct pgd_init_req *req, struct pgd_err *err)
{
  char dir[PATH_MAX];
  json_t *opts = json_array ();

  for (size_t i = 0; i < req->nopts; i++)
    json_array_append_new (opts, json_string (req->opts[i]));
  json_t *root = json_pack ("{s:s,s:o,s:o,s:o}", "Home", l->home, "Opts", opts, "UIDMaps",
                            maps_to_json (l->maps.uid, l->maps.nuid), "GIDMaps",
                            maps_to_json (l->maps.gid, l->maps.ngid));
  if (root == NULL)
    return pgd_error (err, ENOMEM, "encode state");
  cleanup_free char *text = json_dumps (root, JSON_COMPACT);
  json_decref (root);
  if (text == NULL)
    return pgd_error (err, ENOMEM, "encode state");
  snprintf (dir, sizeof dir, "%s", l->state_file);
  char *slash = strrchr (dir, '/');
  if (slash && slash != dir)
    {
      *slash = '\0';
      if (pgd_mkdir_p (dir, 0700, err) < 0)
        return -1;
    }
  return pgd_write_file_atomic (l->state_file, text, strlen (text), err);
}

/* Delete "<X>-init" layers without a sibling "<X>": dockerd leaks them when a Get or
   Put of the init layer fails, and never collects them (PROTOCOL.md §9.1). */
static void
collect_orphan_init_layers (struct pgd_layers *l)
{
  char dir[PATH_MAX];
  cleanup_dir DIR *d = NULL;
  struct dirent *de;

  pgd_store_path (l, dir, "layers", NULL);
  d = opendir (dir);
  if (d == NULL)
    return;
  while ((de = readdir (d)) != NULL)
    {
      size_t n = strlen (de->d_name);
      if (n <= 5 || strcmp (de->d_name + n - 5, "-init") != 0)
        continue;
      char sibling[PGD_ID_MAX + 1];
      snprintf (sibling, sizeof sibling, "%.*s", (int)(n - 5), de->d_name);
      if (pgd_layer_on_disk (l, sibling))
        continue;
      char mnt[PATH_MAX];
      pgd_store_path (l, mnt, "mnt", de->d_name);
      if (pgd_is_mountpoint (mnt))
        continue;
      struct pgd_err err;
      if (pgd_store_remove (l, de->d_name, &err) < 0)
        pgd_log (PGD_LOG_WARN, "collect orphan %s: %s", de->d_name, err.msg);
      else
        pgd_log (PGD_LOG_INFO, "collected orphan init layer %s", de->d_name);
    }
}

/* Home and mnt/ (where containers' roots are mounted) let no other user in: a user
   who can reach a container's root can run its setuid programs (CVE-2021-41091 in
   Docker's own drivers). With user-namespace maps the remapped root's group may
   traverse them, as Docker does: runc, as that root, must reach the container's root. */
static int
restrict_dir (const struct pgd_layers *l, const char *path, struct pgd_err *err)
{
  int64_t gid = l->maps.ngid > 0 ? pgd_idmap_to_host (l->maps.gid, l->maps.ngid, 0) : -1;

  if (gid > 0 && chown (path, (uid_t)-1, (gid_t)gid) < 0)
    return pgd_error (err, errno, "chown %s", path);
  if (chmod (path, gid > 0 ? 0710 : 0700) < 0)
    return pgd_error (err, errno, "chmod %s", path);
  return 0;
}

int
pgd_store_init (struct pgd_layers *l, const struct pgd_init_req *req, bool save,
                struct pgd_err *err)
{
  char path[PATH_MAX];
  bool same_home;

  if (req->home == NULL || req->home[0] != '/')
    return pgd_error (err, 0, "Init: Home must be an absolute path");
  if (strlen (req->home) > PATH_MAX - 512)
    return pgd_error (err, ENAMETOOLONG, "Init: Home");
  if (pgd_mkdir_p (req->home, 0700, err) < 0)
    return pgd_error_wrap (err, "Init");
  {
    PGD_SCOPED_LOCK (&l->lock);
    /* first: a Home another plugin serves is left untouched */
    if (pgd_home_lock (l, req->home, err) < 0)
      return pgd_error_wrap (err, "Init");
    same_home = l->ready && strcmp (l->home, req->home) == 0;
    l->default_size = PGD_DEFAULT_SIZE;
    l->cluster = PGD_DEFAULT_CLUSTER;
    for (size_t i = 0; i < req->nopts; i++)
      if (apply_option (l, req->opts[i], err) < 0)
        return pgd_error_wrap (err, "Init");
    if (copy_maps (&l->maps.uid, &l->maps.nuid, req->maps.uid, req->maps.nuid, err) < 0
        || copy_maps (&l->maps.gid, &l->maps.ngid, req->maps.gid, req->maps.ngid, err) < 0)
      return -1;
    snprintf (l->home, sizeof l->home, "%s", req->home);
    for (size_t i = 0; i < sizeof home_subdirs / sizeof *home_subdirs; i++)
      {
        pgd_store_path (l, path, home_subdirs[i], NULL);
        if (pgd_mkdir_p (path, 0700, err) < 0)
          return pgd_error_wrap (err, "Init");
      }
    pgd_store_path (l, path, "mnt", NULL);
    if (restrict_dir (l, l->home, err) < 0 || restrict_dir (l, path, err) < 0)
      return pgd_error_wrap (err, "Init");
    l->ready = true;
    if (save && persist (l, req, err) < 0)
      return pgd_error_wrap (err, "Init: save state");
  }
  if (save && !same_home)
    pgd_store_recover (l);
  if (save)
    collect_orphan_init_layers (l);
  pgd_log (PGD_LOG_INFO, "home %s, image size %llu, cluster %u, engine %s", l->home,
           (unsigned long long)l->default_size, l->cluster, l->engine_name);
  return 0;
}

/* The persisted Init of ROOT into REQ, every field type-checked; REQ's arrays are
   malloc'd (free them whether or not this fails). */
static int
state_from_json (json_t *root, struct pgd_init_req *req, struct pgd_err *err)
{
  json_t *home;

  if (!json_is_object (root))
    return pgd_error (err, 0, "not a JSON object");
  home = json_object_get (root, "Home");
  if (!json_is_string (home))
    return pgd_error (err, 0, "Home is not a string");
  req->home = json_string_value (home);
  return pgd_init_decode_fields (root, req, err);
}

/* Resume from the state file: parse it, check every field, apply it as an Init. */
static int
resume_state (struct pgd_layers *l, struct pgd_err *err)
{
  json_error_t jerr;
  struct pgd_init_req req = { 0 };
  int ret;

  json_t *root = json_load_file (l->state_file, JSON_REJECT_DUPLICATES, &jerr);
  if (root == NULL)
    return pgd_error (err, 0, "line %d: %s", jerr.line, jerr.text);
  ret = state_from_json (root, &req, err);
  if (ret == 0)
    ret = pgd_store_init (l, &req, false, err);
  free (req.opts);
  free (req.maps.uid);
  free (req.maps.gid);
  json_decref (root);
  return ret;
}

int
pgd_store_load (struct pgd_layers *l, struct pgd_err *err)
{
  char aside[PATH_MAX + 64];

  if (access (l->state_file, F_OK) < 0)
    return 0; /* first start: wait for Init */
  if (resume_state (l, err) == 0)
    {
      pgd_log (PGD_LOG_INFO, "resumed from state %s", l->state_file);
      return 0;
    }
  if (err->errnum == EBUSY)
    return pgd_error_wrap (err, "state file %s", l->state_file); /* a good file, a busy Home */
  /* a damaged file must not stop every start (a crash loop under systemd that
     dockerd's Init never reaches): keep it for a person, start empty, wait for Init */
  snprintf (aside, sizeof aside, "%s.damaged-%llu", l->state_file, (unsigned long long)time (NULL));
  if (rename (l->state_file, aside) < 0)
    return pgd_error_wrap (err, "state file %s (cannot move it aside: %s)", l->state_file,
                           strerror (errno));
  pgd_log (PGD_LOG_WARN, "state file %s: %s; moved to %s; waiting for Init", l->state_file,
           err->msg, aside);
  return 0;
}

/* Unmount whatever the engine left of ID (mount, device, server), quietly. */
static void
teardown (struct pgd_layers *l, const char *image, const char *run, const char *mnt)
{
  struct pgd_err err;
  if (pgd_engine_umount (&l->engine, image, run, mnt, &err) < 0)
    pgd_log (PGD_LOG_WARN, "recover: %s", err.msg);
}

void
pgd_store_recover (struct pgd_layers *l)
{
  char dir[PATH_MAX], image[PATH_MAX], run[PATH_MAX], mnt[PATH_MAX];
  struct dirent *de;
  struct pgd_err err;

  /* online snapshots cut short (engine.h): their mounts are nobody's; taken down first,
     while the layers they name are still where the marker says */
  pgd_store_path (l, dir, "run", NULL);
  cleanup_dir DIR *rd = opendir (dir);
  while (rd && (de = readdir (rd)) != NULL)
    {
      if (de->d_name[0] == '.')
        continue;
      pgd_pathf (run, sizeof run, "%s/%s", dir, de->d_name);
      pgd_store_path (l, image, "layers", de->d_name);
      if (pgd_engine_snapshot_pending (run))
        {
          pgd_log (PGD_LOG_WARN, "recover: an online snapshot of %s was cut short: taking it down",
                   de->d_name);
          if (pgd_engine_snapshot_abort (&l->engine, image, run, &err) < 0)
            pgd_log (PGD_LOG_WARN, "recover: %s", err.msg);
        }
    }

  /* staging: half-created layers and templates, half-removed layers */
  pgd_store_path (l, dir, "staging", NULL);
  cleanup_dir DIR *sd = opendir (dir);
  while (sd && (de = readdir (sd)) != NULL)
    {
      if (de->d_name[0] == '.')
        continue;
      size_t n = strlen (de->d_name);
      if (n > 4 && strcmp (de->d_name + n - 4, ".mnt") == 0)
        {
          pgd_pathf (image, sizeof image, "%s/%.*s", dir, (int)(n - 4), de->d_name);
          pgd_pathf (run, sizeof run, "%s.run", image);
          pgd_pathf (mnt, sizeof mnt, "%s/%s", dir, de->d_name);
          teardown (l, image, run, mnt);
        }
    }
  if (sd)
    rewinddir (sd);
  while (sd && (de = readdir (sd)) != NULL)
    {
      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
        continue;
      pgd_pathf (image, sizeof image, "%s/%s", dir, de->d_name);
      if (pgd_rm_rf (image, &err) < 0)
        pgd_log (PGD_LOG_WARN, "recover: sweep staging: %s", err.msg);
    }

  /* mounts left by an earlier process: adopt them (containers keep running), except
     layers whose ApplyDiff never finished, which are taken down */
  pgd_store_path (l, dir, "layers", NULL);
  cleanup_dir DIR *ld = opendir (dir);
  while (ld && (de = readdir (ld)) != NULL)
    {
      if (de->d_name[0] == '.')
        continue;
      pgd_store_path (l, image, "layers", de->d_name);
      pgd_store_path (l, run, "run", de->d_name);
      pgd_store_path (l, mnt, "mnt", de->d_name);
      bool mounted = pgd_is_mountpoint (mnt);
      bool alive = mounted && pgd_engine_is_mounted (&l->engine, image, run, mnt);
      if (mounted && !alive)
        pgd_log (PGD_LOG_WARN,
                 "layer %s lost its image server while the plugin was down: taking its "
                 "mount down; the next Get checks and mounts it again",
                 de->d_name);
      if (alive && pgd_layer_usable (l, de->d_name, &err) == 0)
        {
          struct statvfs sv;
          PGD_SCOPED_LOCK (&l->lock);
          struct layer *lay = pgd_layer_find (l, de->d_name, true);
          if (lay == NULL)
            continue;
          lay->state = LAYER_MOUNTED;
          lay->refs = 1; /* unknown: the next Put unmounts */
          lay->ro = statvfs (mnt, &sv) == 0 && (sv.f_flag & ST_RDONLY);
          /* written while nobody watched: its changes are not known */
          pgd_track_drop (l->tracker, de->d_name, image);
          pgd_log (PGD_LOG_INFO, "adopted mounted layer %s", de->d_name);
          continue;
        }
      if (mounted || access (run, F_OK) == 0)
        teardown (l, image, run, mnt);
    }
}

/* Sum the disk blocks of the files under DIR, each inode once (deltas are shared). */
static uint64_t
disk_used (const char *dir)
{
  uint64_t total = 0;
  size_t nseen = 0, cap = 0;
  ino_t *seen = NULL;
  cleanup_dir DIR *d = opendir (dir);
  struct dirent *de, *fe;

  while (d && (de = readdir (d)) != NULL)
    {
      char sub[PATH_MAX];
      if (de->d_name[0] == '.')
        continue;
      pgd_pathf (sub, sizeof sub, "%s/%s", dir, de->d_name);
      cleanup_dir DIR *ld = opendir (sub);
      while (ld && (fe = readdir (ld)) != NULL)
        {
          struct stat st;
          bool dup = false;
          if (fe->d_name[0] == '.' || fstatat (dirfd (ld), fe->d_name, &st, 0) < 0)
            continue;
          for (size_t i = 0; i < nseen && !dup; i++)
            dup = seen[i] == st.st_ino;
          if (dup)
            continue;
          if (nseen == cap)
            {
              cap = cap ? cap * 2 : 256;
              ino_t *ns = realloc (seen, cap * sizeof *ns);
              if (ns == NULL)
                break;
              seen = ns;
            }
          seen[nseen++] = st.st_ino;
          total += (uint64_t)st.st_blocks * 512;
        }
    }
  free (seen);
  return total;
}

static int
add_u64 (struct pgd_kvlist *out, const char *key, uint64_t v, struct pgd_err *err)
{
  char buf[32];
  snprintf (buf, sizeof buf, "%llu", (unsigned long long)v);
  return pgd_kvlist_add (out, key, buf, err);
}

int
pgd_store_status (void *ctx, struct pgd_kvlist *out, struct pgd_err *err)
{
  struct pgd_layers *l = ctx;
  char dir[PATH_MAX];
  struct statfs sf;
  uint64_t nlayers = 0, nmounted = 0;

  {
    PGD_SCOPED_LOCK (&l->lock);
    if (pgd_store_ready (l, err) < 0)
      return -1;
    for (size_t b = 0; b < PGD_BUCKETS; b++)
      for (struct layer *lay = l->table[b]; lay; lay = lay->next)
        nmounted += lay->state == LAYER_MOUNTED;
  }
  pgd_store_path (l, dir, "layers", NULL);
  cleanup_dir DIR *d = opendir (dir);
  struct dirent *de;
  while (d && (de = readdir (d)) != NULL)
    nlayers += de->d_name[0] != '.';
  const char *fs = "unknown";
  if (statfs (l->home, &sf) == 0)
    fs = sf.f_type == EXT4_SUPER_MAGIC_ ? "extfs" : sf.f_type == 0x58465342 ? "xfs" : "other";
  if (pgd_kvlist_add (out, "Engine",
                      l->engine.kind == PGD_ENGINE_KERNEL ? "kernel (ploop module)"
                                                          : "user (FUSE + loop + ext4)",
                      err)
          < 0
      || pgd_kvlist_add (out, "Home", l->home, err) < 0
      || pgd_kvlist_add (out, "Backing Filesystem", fs, err) < 0
      || pgd_kvlist_add (out, "Supports d_type", "true", err) < 0
      || add_u64 (out, "Default Image Size", l->default_size, err) < 0
      || add_u64 (out, "Cluster Size", l->cluster, err) < 0
      || add_u64 (out, "Layers", nlayers, err) < 0
      || add_u64 (out, "Mounted Layers", nmounted, err) < 0
      || add_u64 (out, "Disk Used By Images", disk_used (dir), err) < 0)
    return -1;
  return 0;
}

int
pgd_store_metadata (void *ctx, const char *id, struct pgd_kvlist *out, struct pgd_err *err)
{
  struct pgd_layers *l = ctx;
  char image[PATH_MAX], mnt[PATH_MAX], dev[PATH_MAX];
  struct pgd_image_info info;

  {
    PGD_SCOPED_LOCK (&l->lock);
    if (pgd_store_ready (l, err) < 0)
      return -1;
    if (!pgd_layer_on_disk (l, id))
      return pgd_error (err, ENOENT, "layer %s", id);
  }
  pgd_store_path (l, image, "layers", id);
  pgd_store_path (l, mnt, "mnt", id);
  if (pgd_image_info (image, &info, err) < 0)
    return pgd_error_wrap (err, "layer %s", id);
  if (pgd_kvlist_add (out, "ImageDir", image, err) < 0
      || pgd_kvlist_add (out, "MountDir", mnt, err) < 0
      || add_u64 (out, "VirtualSize", info.virtual_size, err) < 0
      || add_u64 (out, "ClusterSize", info.cluster_size, err) < 0
      || add_u64 (out, "Deltas", info.ndeltas, err) < 0
      || add_u64 (out, "UsedBytes", info.own_bytes, err) < 0)
    return -1;
  struct pgd_err ignored;
  if (pgd_mount_source (mnt, dev, sizeof dev, &ignored) == 0
      && pgd_kvlist_add (out, "Device", dev, err) < 0)
    return -1;
  return 0;
}

int
pgd_layers_open (struct pgd_layers **out, const struct pgd_layers_config *cfg, struct pgd_err *err)
{
  struct pgd_layers *l = calloc (1, sizeof *l);

  if (l == NULL)
    return pgd_error (err, ENOMEM, "layer store");
  l->home_lock_fd = -1;
  pthread_mutex_init (&l->lock, NULL);
  pthread_mutex_init (&l->template_lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&l->cond, &ca);
  pthread_condattr_destroy (&ca);
  l->linger_ms = cfg->linger_ms;
  l->default_size = PGD_DEFAULT_SIZE;
  l->cluster = PGD_DEFAULT_CLUSTER;
  snprintf (l->state_file, sizeof l->state_file, "%s",
            cfg->state_file ? cfg->state_file : "/var/lib/ploop-graphdriver/state.json");
  snprintf (l->engine_name, sizeof l->engine_name, "%s", cfg->engine ? cfg->engine : "auto");
  snprintf (l->exe, sizeof l->exe, "%s", cfg->exe ? cfg->exe : "/proc/self/exe");
  if (!cfg->no_tracker && pgd_tracker_new (&l->tracker, err) < 0)
    goto fail;
  if (pgd_engine_setup (&l->engine, l->engine_name, l->exe, err) < 0)
    goto fail;
  l->engine.stall_ms = l->stall_ms = cfg->stall_ms;
  if (cfg->home)
    {
      struct pgd_init_req req = { .home = cfg->home };
      if (pgd_store_init (l, &req, false, err) < 0)
        goto fail;
    }
  else if (pgd_store_load (l, err) < 0)
    goto fail;
  if (l->ready)
    pgd_store_recover (l);
  if (pgd_reaper_start (l, err) < 0)
    goto fail;
  *out = l;
  return 0;
fail:
  pgd_layers_close (l);
  return -1;
}

void
pgd_layers_close (struct pgd_layers *l)
{
  if (l == NULL)
    return;
  pgd_reaper_stop (l);
  pgd_tracker_free (l->tracker);
  for (size_t b = 0; b < PGD_BUCKETS; b++)
    while (l->table[b])
      pgd_layer_forget (l, l->table[b]->id);
  free (l->maps.uid);
  free (l->maps.gid);
  pgd_home_unlock (l);
  pthread_mutex_destroy (&l->lock);
  pthread_mutex_destroy (&l->template_lock);
  pthread_cond_destroy (&l->cond);
  free (l);
}
