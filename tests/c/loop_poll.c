/*
 * tests/c/loop_common.h's scenarios on a plain poll(2) loop, the smallest
 * caller: wait for POLLIN on sockserv_server_loop_fd for at most what
 * sockserv_server_loop_timeout_ms said, then sockserv_server_process.
 */
#define _POSIX_C_SOURCE 200809L
#include "loop_common.h"

#include <poll.h>

static const char *backend_name(void) { return "poll"; }

static int backend_run(sockserv_server *server, volatile int *stop, long limit_ms)
{
    struct pollfd p;
    long long end = now_ms() + limit_ms;
    int ms;
    (void)stop;
    p.events = POLLIN;
    REQUIRE_OK(sockserv_server_loop_fd(server, &p.fd));
    for (ms = drive_once(server); ms != -2; ms = drive_once(server)) {
        long long left = end - now_ms();
        if (left <= 0) {
            fprintf(stderr, "poll: time limit reached\n");
            return 1;
        }
        if (ms < 0 || ms > left)
            ms = (int)left;
        if (poll(&p, 1, ms) < 0 && errno != EINTR) {
            perror("poll");
            return 1;
        }
    }
    return 0;
}
