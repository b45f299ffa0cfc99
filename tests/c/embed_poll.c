/*
 * Embedded mode driven by a plain poll() loop (level-triggered by nature):
 * the scenarios of embed_common.h. Run by tests/c_api/embedded.rs.
 */
#define _GNU_SOURCE
#include "embed_common.h"

#include <poll.h>

static int watched = -1;

static void poll_init(int fd) { watched = fd; }

static void poll_wait(int ms)
{
    struct pollfd p = {watched, POLLIN, 0};
    int n = poll(&p, 1, ms);
    REQUIRE(n >= 0 || errno == EINTR);
}

static void poll_done(void) { watched = -1; }

int main(void)
{
    static const struct waiter w = {"poll", poll_init, poll_wait, poll_done};
    return embed_main(&w);
}
