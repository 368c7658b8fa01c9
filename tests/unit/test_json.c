/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The protocol's JSON codec (plugin/proto.c): requests as dockerd 20.10.24 sends them,
   malformed input, and byte-exact responses (PROTOCOL.md §2.3, §2.4, §5). */
#include <criterion/criterion.h>
#include <string.h>

#include "proto.h"

#define HEX64 "9b0d733a0bc8d1b4e4de1c3b7a5f4b5f2e8c1a0d3f6b7c8d9e0f1a2b3c4d5e6f"

/* Decode TEXT (without its NUL) as a per-layer request; expect success. */
static void
layer_ok (const char *text, struct pgd_proto_layer_req *req)
{
  struct pgd_err err = { 0 };

  cr_assert_eq (pgd_proto_decode_layer (text, strlen (text), req, &err), 0, "decode %s: %s", text,
                err.msg);
}

/* Decode TEXT and expect failure with a message containing WANT. */
static void
layer_bad (const char *text, size_t len, const char *want)
{
  struct pgd_proto_layer_req req;
  struct pgd_err err = { 0 };

  cr_assert_eq (pgd_proto_decode_layer (text, len, &req, &err), -1, "decode %s must fail",
                text ? text : "NULL");
  cr_assert (strstr (err.msg, want) != NULL, "error \"%s\" must mention \"%s\"", err.msg, want);
  cr_assert_null (req.id, "a failed decode leaves nothing behind");
  cr_assert_null (req.doc);
  cr_assert_eq (req.storage_opt.n, 0);
}

Test (decode_layer, id_only_with_trailing_newline)
{
  struct pgd_proto_layer_req req;

  layer_ok ("{\"ID\":\"" HEX64 "\"}\n", &req);
  cr_assert_str_eq (req.id, HEX64);
  cr_assert_null (req.parent, "an absent Parent means none");
  cr_assert_null (req.mount_label);
  cr_assert_eq (req.storage_opt.n, 0);
  pgd_proto_layer_req_free (&req);
  cr_assert_null (req.id);
}

Test (decode_layer, parent_label_and_storage_opt)
{
  struct pgd_proto_layer_req req;

  layer_ok ("{\"ID\":\"c1\",\"Parent\":\"c1-init\",\"MountLabel\":\"system_u:object_r:x\","
            "\"StorageOpt\":{\"size\":\"10G\",\"other\":\"v\"}}\n",
            &req);
  cr_assert_str_eq (req.id, "c1");
  cr_assert_str_eq (req.parent, "c1-init");
  cr_assert_str_eq (req.mount_label, "system_u:object_r:x");
  cr_assert_eq (req.storage_opt.n, 2);
  cr_assert_str_eq (req.storage_opt.items[0].key, "size");
  cr_assert_str_eq (req.storage_opt.items[0].value, "10G");
  cr_assert_str_eq (req.storage_opt.items[1].key, "other");
  cr_assert_str_eq (req.storage_opt.items[1].value, "v");
  pgd_proto_layer_req_free (&req);
}

Test (decode_layer, empty_or_null_parent_means_none)
{
  struct pgd_proto_layer_req req;

  layer_ok ("{\"ID\":\"a\",\"Parent\":\"\"}", &req);
  cr_assert_null (req.parent);
  pgd_proto_layer_req_free (&req);
  layer_ok ("{\"ID\":\"a\",\"Parent\":null,\"StorageOpt\":null,\"MountLabel\":null}", &req);
  cr_assert_null (req.parent);
  cr_assert_null (req.mount_label);
  cr_assert_eq (req.storage_opt.n, 0);
  pgd_proto_layer_req_free (&req);
}

Test (decode_layer, unknown_keys_ignored)
{
  struct pgd_proto_layer_req req;

  layer_ok ("{\"ID\":\"a\",\"Future\":[1,2,{}]}", &req);
  cr_assert_str_eq (req.id, "a");
  pgd_proto_layer_req_free (&req);
}

Test (decode_layer, create_request_borrows_fields)
{
  struct pgd_proto_layer_req req;
  struct pgd_create_req creq;

  layer_ok ("{\"ID\":\"c\",\"Parent\":\"p\",\"StorageOpt\":{\"size\":\"1G\"}}", &req);
  pgd_proto_create_req (&req, true, &creq);
  cr_assert_str_eq (creq.id, "c");
  cr_assert_str_eq (creq.parent, "p");
  cr_assert_null (creq.mount_label);
  cr_assert_eq (creq.nstorage_opt, 1);
  cr_assert_str_eq (creq.storage_opt[0].key, "size");
  cr_assert (creq.rw);
  pgd_proto_create_req (&req, false, &creq);
  cr_assert_not (creq.rw);
  pgd_proto_layer_req_free (&req);
}

Test (decode_layer, rejects_empty_body)
{
  layer_bad ("", 0, "empty request body");
  layer_bad (NULL, 0, "empty request body");
}

Test (decode_layer, rejects_malformed_json)
{
  const char *t = "{\"ID\":";
  layer_bad (t, strlen (t), "not valid JSON");
  t = "{\"ID\":\"a\"} trailing";
  layer_bad (t, strlen (t), "not valid JSON");
  t = "\n";
  layer_bad (t, strlen (t), "not valid JSON");
}

Test (decode_layer, rejects_non_objects)
{
  const char *bodies[] = { "[]", "[{\"ID\":\"a\"}]", "\"a\"", "1", "null", "true" };

  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
    layer_bad (bodies[i], strlen (bodies[i]), "not a JSON object");
}

Test (decode_layer, rejects_missing_or_empty_id)
{
  layer_bad ("{}\n", 3, "missing ID");
  layer_bad ("{\"ID\":null}", 11, "missing ID");
  layer_bad ("{\"Parent\":\"p\"}", 14, "missing ID");
  layer_bad ("{\"ID\":\"\"}", 9, "empty");
  layer_bad ("{\"id\":\"a\"}", 10, "missing ID"); /* dockerd always spells it ID */
}

Test (decode_layer, rejects_bad_id_types_and_values)
{
  const char *t;

  layer_bad ("{\"ID\":5}", 8, "ID is not a string");
  layer_bad ("{\"ID\":[\"a\"]}", 12, "ID is not a string");
  t = "{\"ID\":\"a/b\"}";
  layer_bad (t, strlen (t), "invalid ID");
  t = "{\"ID\":\"..\"}";
  layer_bad (t, strlen (t), "invalid ID");
  t = "{\"ID\":\"a\\nb\"}";
  layer_bad (t, strlen (t), "invalid ID");
  t = "{\"ID\":\"a\\u0000b\"}"; /* jansson refuses NUL inside strings */
  layer_bad (t, strlen (t), "not valid JSON");
}

Test (decode_layer, rejects_bad_parent)
{
  const char *t = "{\"ID\":\"a\",\"Parent\":\"../b\"}";

  layer_bad (t, strlen (t), "Parent: invalid ID");
  t = "{\"ID\":\"a\",\"Parent\":\".\"}";
  layer_bad (t, strlen (t), "Parent: invalid ID");
  t = "{\"ID\":\"a\",\"Parent\":7}";
  layer_bad (t, strlen (t), "Parent is not a string");
}

Test (decode_layer, rejects_bad_storage_opt_and_label)
{
  const char *t = "{\"ID\":\"a\",\"StorageOpt\":[\"size=1G\"]}";

  layer_bad (t, strlen (t), "StorageOpt is not an object");
  t = "{\"ID\":\"a\",\"StorageOpt\":{\"size\":10}}";
  layer_bad (t, strlen (t), "StorageOpt size is not a string");
  t = "{\"ID\":\"a\",\"MountLabel\":{}}";
  layer_bad (t, strlen (t), "MountLabel is not a string");
}

Test (decode_empty, accepts_objects_only)
{
  struct pgd_err err = { 0 };

  cr_assert_eq (pgd_proto_decode_empty ("{}\n", 3, &err), 0, "%s", err.msg);
  cr_assert_eq (pgd_proto_decode_empty ("{\"x\":1}", 7, &err), 0, "%s", err.msg);
  cr_assert_eq (pgd_proto_decode_empty ("", 0, &err), -1);
  cr_assert (strstr (err.msg, "empty") != NULL, "%s", err.msg);
  cr_assert_eq (pgd_proto_decode_empty ("[]", 2, &err), -1);
  cr_assert (strstr (err.msg, "not a JSON object") != NULL, "%s", err.msg);
  cr_assert_eq (pgd_proto_decode_empty ("{", 1, &err), -1);
}

static void
init_ok (const char *text, struct pgd_proto_init_req *req)
{
  struct pgd_err err = { 0 };

  cr_assert_eq (pgd_proto_decode_init (text, strlen (text), req, &err), 0, "decode %s: %s", text,
                err.msg);
}

static void
init_bad (const char *text, const char *want)
{
  struct pgd_proto_init_req req;
  struct pgd_err err = { 0 };

  cr_assert_eq (pgd_proto_decode_init (text, strlen (text), &req, &err), -1, "decode %s must fail",
                text);
  cr_assert (strstr (err.msg, want) != NULL, "error \"%s\" must mention \"%s\"", err.msg, want);
  cr_assert_null (req.doc);
  cr_assert_null (req.req.opts);
  cr_assert_null (req.req.maps.uid);
}

Test (decode_init, nulls_as_dockerd_sends_them)
{
  struct pgd_proto_init_req req;

  init_ok ("{\"Home\":\"/var/lib/docker/ploop\",\"Opts\":null,\"UIDMaps\":null,\"GIDMaps\":null}\n",
           &req);
  cr_assert_str_eq (req.req.home, "/var/lib/docker/ploop");
  cr_assert_eq (req.req.nopts, 0);
  cr_assert_eq (req.req.maps.nuid, 0);
  cr_assert_eq (req.req.maps.ngid, 0);
  pgd_proto_init_req_free (&req);
}

Test (decode_init, empty_arrays)
{
  struct pgd_proto_init_req req;

  init_ok ("{\"Home\":\"/h\",\"Opts\":[],\"UIDMaps\":[],\"GIDMaps\":[]}", &req);
  cr_assert_str_eq (req.req.home, "/h");
  cr_assert_eq (req.req.nopts, 0);
  cr_assert_eq (req.req.maps.nuid, 0);
  cr_assert_eq (req.req.maps.ngid, 0);
  pgd_proto_init_req_free (&req);
}

Test (decode_init, opts_and_id_maps)
{
  struct pgd_proto_init_req req;

  init_ok ("{\"Home\":\"/srv/docker/ploop:latest\",\"Opts\":[\"ploop.size=10G\",\"foo=bar\"],"
           "\"UIDMaps\":[{\"container_id\":0,\"host_id\":100000,\"size\":65536}],"
           "\"GIDMaps\":[{\"container_id\":0,\"host_id\":200000,\"size\":1000},"
           "{\"container_id\":1000,\"host_id\":4294967295,\"size\":1}]}",
           &req);
  cr_assert_str_eq (req.req.home, "/srv/docker/ploop:latest");
  cr_assert_eq (req.req.nopts, 2);
  cr_assert_str_eq (req.req.opts[0], "ploop.size=10G");
  cr_assert_str_eq (req.req.opts[1], "foo=bar");
  cr_assert_eq (req.req.maps.nuid, 1);
  cr_assert_eq (req.req.maps.uid[0].container_id, 0);
  cr_assert_eq (req.req.maps.uid[0].host_id, 100000);
  cr_assert_eq (req.req.maps.uid[0].size, 65536);
  cr_assert_eq (req.req.maps.ngid, 2);
  cr_assert_eq (req.req.maps.gid[0].host_id, 200000);
  cr_assert_eq (req.req.maps.gid[1].container_id, 1000);
  cr_assert_eq (req.req.maps.gid[1].host_id, 4294967295U);
  pgd_proto_init_req_free (&req);
  cr_assert_null (req.doc);
}

Test (decode_init, absent_keys_mean_none)
{
  struct pgd_proto_init_req req;

  init_ok ("{\"Home\":\"/h\"}", &req);
  cr_assert_eq (req.req.nopts, 0);
  cr_assert_eq (req.req.maps.nuid, 0);
  pgd_proto_init_req_free (&req);
}

Test (decode_init, rejects_bad_home)
{
  init_bad ("{\"Opts\":null}", "missing Home");
  init_bad ("{\"Home\":\"\"}", "Home is empty");
  init_bad ("{\"Home\":1}", "Home is not a string");
  init_bad ("", "empty request body");
  init_bad ("[\"/h\"]", "not a JSON object");
}

Test (decode_init, rejects_bad_opts_and_maps)
{
  init_bad ("{\"Home\":\"/h\",\"Opts\":\"a=b\"}", "Opts is not an array");
  init_bad ("{\"Home\":\"/h\",\"Opts\":[\"a\",2]}", "Opts[1] is not a string");
  init_bad ("{\"Home\":\"/h\",\"UIDMaps\":{}}", "UIDMaps is not an array");
  init_bad ("{\"Home\":\"/h\",\"UIDMaps\":[1]}", "UIDMaps[0] is not an object");
  init_bad ("{\"Home\":\"/h\",\"GIDMaps\":[{\"container_id\":0,\"host_id\":1}]}",
            "GIDMaps[0]: missing size");
  init_bad ("{\"Home\":\"/h\",\"UIDMaps\":[{\"ContainerID\":0,\"HostID\":1,\"Size\":1}]}",
            "missing container_id");
  init_bad ("{\"Home\":\"/h\",\"UIDMaps\":[{\"container_id\":-1,\"host_id\":1,\"size\":1}]}",
            "container_id is not an integer");
  init_bad (
      "{\"Home\":\"/h\",\"UIDMaps\":[{\"container_id\":0,\"host_id\":4294967296,\"size\":1}]}",
      "host_id is not an integer");
  init_bad ("{\"Home\":\"/h\",\"UIDMaps\":[{\"container_id\":0,\"host_id\":1,\"size\":1.5}]}",
            "size is not an integer");
}

/* Compare an encoder's output with the exact expected text, then free it. */
static void
expect_json (char *got, const char *want)
{
  cr_assert_not_null (got, "encoder returned NULL");
  cr_assert_str_eq (got, want);
  free (got);
}

Test (encode, fixed_answers)
{
  expect_json (pgd_proto_encode_empty (), "{}");
  expect_json (pgd_proto_encode_activate (), "{\"Implements\":[\"GraphDriver\"]}");
  expect_json (pgd_proto_encode_capabilities (),
               "{\"Capabilities\":{\"ReproducesExactDiffs\":false}}");
}

Test (encode, err_escapes)
{
  expect_json (pgd_proto_encode_err ("no such layer: x"), "{\"Err\":\"no such layer: x\"}");
  expect_json (pgd_proto_encode_err ("quote \" backslash \\ newline \n"),
               "{\"Err\":\"quote \\\" backslash \\\\ newline \\n\"}");
  expect_json (pgd_proto_encode_err (""), "{\"Err\":\"\"}");
}

Test (encode, err_with_invalid_utf8_still_encodes)
{
  expect_json (pgd_proto_encode_err ("bad \xff\xfe name"), "{\"Err\":\"bad ?? name\"}");
  expect_json (pgd_proto_encode_err ("caf\xc3\xa9"), "{\"Err\":\"caf\xc3\xa9\"}");
}

Test (encode, dir_exists)
{
  expect_json (pgd_proto_encode_dir ("/var/lib/docker/ploop/mnt/a"),
               "{\"Dir\":\"/var/lib/docker/ploop/mnt/a\"}");
  expect_json (pgd_proto_encode_exists (true), "{\"Exists\":true}");
  expect_json (pgd_proto_encode_exists (false), "{\"Exists\":false}");
}

Test (encode, size_is_an_integer)
{
  expect_json (pgd_proto_encode_size (0), "{\"Size\":0}");
  expect_json (pgd_proto_encode_size (1982256), "{\"Size\":1982256}");
  expect_json (pgd_proto_encode_size (INT64_C (1) << 53), "{\"Size\":9007199254740992}");
  expect_json (pgd_proto_encode_size (INT64_MAX), "{\"Size\":9223372036854775807}");
}

Test (encode, status_pairs_in_order)
{
  struct pgd_kvlist l = { 0 };
  struct pgd_err err;

  expect_json (pgd_proto_encode_status (&l), "{\"Status\":[]}");
  cr_assert_eq (pgd_kvlist_add (&l, "Backing Filesystem", "extfs", &err), 0);
  cr_assert_eq (pgd_kvlist_add (&l, "Supports d_type", "true", &err), 0);
  expect_json (pgd_proto_encode_status (&l),
               "{\"Status\":[[\"Backing Filesystem\",\"extfs\"],[\"Supports d_type\",\"true\"]]}");
  pgd_kvlist_free (&l);
}

Test (encode, metadata_object_of_strings)
{
  struct pgd_kvlist l = { 0 };
  struct pgd_err err;

  expect_json (pgd_proto_encode_metadata (&l), "{\"Metadata\":{}}");
  cr_assert_eq (pgd_kvlist_add (&l, "MountPoint", "/h/mnt/a", &err), 0);
  cr_assert_eq (pgd_kvlist_add (&l, "Size", "10737418240", &err), 0);
  expect_json (pgd_proto_encode_metadata (&l),
               "{\"Metadata\":{\"MountPoint\":\"/h/mnt/a\",\"Size\":\"10737418240\"}}");
  pgd_kvlist_free (&l);
}

Test (encode, changes_in_order)
{
  struct pgd_changes c = { 0 };
  struct pgd_err err;

  expect_json (pgd_proto_encode_changes (&c), "{\"Changes\":[]}");
  cr_assert_eq (pgd_changes_add (&c, "/bin", PGD_CHANGE_MODIFY, &err), 0);
  cr_assert_eq (pgd_changes_add (&c, "/bin/ls", PGD_CHANGE_DELETE, &err), 0);
  cr_assert_eq (pgd_changes_add (&c, "/hello", PGD_CHANGE_ADD, &err), 0);
  expect_json (pgd_proto_encode_changes (&c),
               "{\"Changes\":[{\"Path\":\"/bin\",\"Kind\":0},{\"Path\":\"/bin/ls\",\"Kind\":2},"
               "{\"Path\":\"/hello\",\"Kind\":1}]}");
  pgd_changes_free (&c);
}

Test (encode, changes_with_non_utf8_names)
{
  struct pgd_changes c = { 0 };
  struct pgd_err err;

  cr_assert_eq (pgd_changes_add (&c, "/a\x80z", PGD_CHANGE_ADD, &err), 0);
  expect_json (pgd_proto_encode_changes (&c), "{\"Changes\":[{\"Path\":\"/a?z\",\"Kind\":1}]}");
  pgd_changes_free (&c);
}
