/*
 * tests/c/loop_common.h's scenarios on a libevent loop: an EV_READ |
 * EV_PERSIST event on sockserv_server_loop_fd (with -e in $LOOP_EDGE:
 * EV_ET, edge-triggered) and an evtimer set from
 * sockserv_server_loop_timeout_ms after each sockserv_server_process.
 */
#define _POSIX_C_SOURCE 200809L
#include "loop_common.h"

#include <event2/event.h>

static int edge;

static const char *backend_name(void) { return edge ? "libevent-edge" : "libevent"; }

struct ev_ctx {
    sockserv_server *srv;
    struct event_base *base;
    struct event *io, *timer, *limit;
    int failed;
};

static void ev_drive(struct ev_ctx *c)
{
    int ms = drive_once(c->srv);
    if (ms == -2) {
        event_base_loopbreak(c->base);
    } else if (ms < 0) {
        evtimer_del(c->timer);
    } else {
        /* 0 means more is ready: edge-triggered, no new edge would come
         * for it, so process again (in the next loop iteration) before
         * sleeping. */
        struct timeval tv;
        tv.tv_sec = ms / 1000;
        tv.tv_usec = (ms % 1000) * 1000;
        evtimer_add(c->timer, &tv);
    }
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ev_drive(arg);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ev_drive(arg);
}

static void on_limit(evutil_socket_t fd, short what, void *arg)
{
    struct ev_ctx *c = arg;
    (void)fd;
    (void)what;
    fprintf(stderr, "%s: time limit reached\n", backend_name());
    c->failed = 1;
    event_base_loopbreak(c->base);
}

static int backend_run(sockserv_server *server, volatile int *stop, long limit_ms)
{
    struct ev_ctx c;
    struct timeval tv;
    int fd = -1;
    short flags = EV_READ | EV_PERSIST;
    const char *e = getenv("LOOP_EDGE");
    (void)stop;
    edge = e && strcmp(e, "1") == 0;
    if (edge)
        flags |= EV_ET;
    memset(&c, 0, sizeof c);
    c.srv = server;
    REQUIRE((c.base = event_base_new()) != NULL);
    REQUIRE_OK(sockserv_server_loop_fd(server, &fd));
    REQUIRE((c.io = event_new(c.base, fd, flags, on_io, &c)) != NULL);
    REQUIRE((c.timer = evtimer_new(c.base, on_timer, &c)) != NULL);
    REQUIRE((c.limit = evtimer_new(c.base, on_limit, &c)) != NULL);
    REQUIRE(event_add(c.io, NULL) == 0);
    tv.tv_sec = limit_ms / 1000;
    tv.tv_usec = (limit_ms % 1000) * 1000;
    evtimer_add(c.limit, &tv);
    if (edge)
        say("method %s edge", event_base_get_method(c.base));
    ev_drive(&c);
    if (!done)
        event_base_dispatch(c.base);
    event_free(c.io);
    event_free(c.timer);
    event_free(c.limit);
    event_base_free(c.base);
    return c.failed ? 1 : 0;
}
