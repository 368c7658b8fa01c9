/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The GraphDriver endpoints: libmicrohttpd request handling on top of the operation
   table of driver.h. Every request body is read to its end before the answer. */
#ifndef PGD_ROUTES_H
#define PGD_ROUTES_H

#include <microhttpd.h>
#include <stdbool.h>

#include "driver.h"
#include "err.h"
#include "inflight.h"

/* MHD_AccessHandlerCallback; CLS is the struct pgd_routes. */
enum MHD_Result pgd_routes_handle (void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_data_size, void **req_cls);

/* MHD_RequestCompletedCallback: frees the request state, also after a client abort. */
void pgd_routes_completed (void *cls, struct MHD_Connection *conn, void **req_cls,
                           enum MHD_RequestTerminationCode toe);

/* Queue STATUS with the malloc'd JSON text BODY (taken; NULL means out of memory),
   Content-Type JSON and Connection: close. */
enum MHD_Result pgd_routes_reply (struct MHD_Connection *conn, unsigned status, char *body);

#endif
