/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "request.h"

#include <errno.h>
#include <poll.h>

#include "log.h"

static __thread int client_fd = -1;

void
pgd_request_attach (int fd)
{
  client_fd = fd;
}

void
pgd_request_detach (void)
{
  client_fd = -1;
}

bool
pgd_request_gone (void)
{
  if (client_fd < 0)
    return false;
  /* POLLIN is not asked: a client may send more, only a hang-up means it left */
  struct pollfd p = { .fd = client_fd, .events = POLLRDHUP };
  if (poll (&p, 1, 0) <= 0)
    return false;
  return p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL);
}

int
pgd_request_check (const char *what, struct pgd_err *err)
{
  if (!pgd_request_gone ())
    return 0;
  pgd_log (PGD_LOG_WARN, "%s: the client went away while it waited; cancelled, nothing changed",
           what);
  return pgd_error (err, ECANCELED, "%s: cancelled, its client went away", what);
}
