/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer harness: every JSON request decoder of plugin/proto.h (each request kind)
   on the same bytes, then the encoders on what was decoded and on the raw bytes as a
   string. Crashes, leaks and sanitizer reports are the findings; a decoder must also
   never succeed without filling what its contract promises. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proto.h"

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  pgd_log_set_level (PGD_LOG_ERROR);
  return 0;
}

static void
check (int cond, const char *what)
{
  if (!cond)
    {
      fprintf (stderr, "fuzz_proto: broken contract: %s\n", what);
      abort ();
    }
}

/* The encoders return NULL only when out of memory; the result must be JSON text. */
static void
use_encoded (char *text)
{
  check (text != NULL, "encoder returned NULL");
  check (text[0] == '{', "encoder output is not an object");
  free (text);
}

static void
fuzz_layer (const char *body, size_t len)
{
  struct pgd_proto_layer_req req;
  struct pgd_err err = { 0 };

  memset (&req, 0, sizeof req);
  if (pgd_proto_decode_layer (body, len, &req, &err) < 0)
    {
      check (err.msg[0] != '\0', "layer decode failed without a message");
      check (req.doc == NULL && req.storage_opt.n == 0, "failed decode left state");
      use_encoded (pgd_proto_encode_err (err.msg));
      pgd_proto_layer_req_free (&req);
      return;
    }
  check (req.id != NULL && req.id[0] != '\0', "decoded layer request without an ID");
  check (req.parent == NULL || req.parent[0] != '\0', "empty Parent not turned into NULL");
  for (int rw = 0; rw < 2; rw++)
    {
      struct pgd_create_req c;
      memset (&c, 0, sizeof c);
      pgd_proto_create_req (&req, rw, &c);
      check (c.id == req.id, "create request lost the ID");
    }
  use_encoded (pgd_proto_encode_dir (req.id));
  use_encoded (pgd_proto_encode_metadata (&req.storage_opt));
  use_encoded (pgd_proto_encode_status (&req.storage_opt));
  pgd_proto_layer_req_free (&req);
}

static void
fuzz_init (const char *body, size_t len)
{
  struct pgd_proto_init_req req;
  struct pgd_err err = { 0 };

  memset (&req, 0, sizeof req);
  if (pgd_proto_decode_init (body, len, &req, &err) < 0)
    {
      check (err.msg[0] != '\0', "init decode failed without a message");
      pgd_proto_init_req_free (&req);
      return;
    }
  check (req.req.home != NULL && req.req.home[0] != '\0', "decoded Init without a Home");
  use_encoded (pgd_proto_encode_dir (req.req.home));
  pgd_proto_init_req_free (&req);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct pgd_err err = { 0 };
  /* a copy of exactly SIZE bytes, no terminator: the decoders take a length and must
     not read past it (ASan catches the overread) */
  char *body = malloc (size ? size : 1);
  char *str;

  if (body == NULL)
    return 0;
  memcpy (body, data, size);

  if (pgd_proto_decode_empty (body, size, &err) < 0)
    check (err.msg[0] != '\0', "empty decode failed without a message");
  fuzz_layer (body, size);
  fuzz_init (body, size);
  free (body);

  /* the raw bytes as a C string through the string encoders (UTF-8 repair) */
  str = malloc (size + 1);
  if (str == NULL)
    return 0;
  memcpy (str, data, size);
  str[size] = '\0';
  use_encoded (pgd_proto_encode_err (str));
  use_encoded (pgd_proto_encode_dir (str));
  free (str);
  return 0;
}
