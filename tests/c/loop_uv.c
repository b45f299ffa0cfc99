/*
 * tests/c/loop_common.h's scenarios on a libuv loop: a uv_poll_t on
 * sockserv_server_loop_fd (libuv polls level-triggered) and a uv_timer_t
 * set from sockserv_server_loop_timeout_ms after each
 * sockserv_server_process.
 */
#define _POSIX_C_SOURCE 200809L
#include "loop_common.h"

#include <uv.h>

static const char *backend_name(void) { return "libuv"; }

struct uv_ctx {
    sockserv_server *srv;
    uv_poll_t poll;
    uv_timer_t timer, limit;
    int failed;
};

static void uv_drive(struct uv_ctx *c);

static void on_poll(uv_poll_t *h, int status, int events)
{
    (void)events;
    CHECK(status == 0);
    uv_drive(h->data);
}

static void on_timer(uv_timer_t *h) { uv_drive(h->data); }

static void on_limit(uv_timer_t *h)
{
    struct uv_ctx *c = h->data;
    fprintf(stderr, "libuv: time limit reached\n");
    c->failed = 1;
    uv_stop(h->loop);
}

static void uv_drive(struct uv_ctx *c)
{
    int ms = drive_once(c->srv);
    if (ms == -2) {
        uv_stop(c->poll.loop);
    } else if (ms < 0) {
        uv_timer_stop(&c->timer);
    } else {
        /* 0 too: the timer fires in the next loop iteration, after a poll
         * that does not wait, so other handles get their turn. */
        uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
    }
}

static void on_closed(uv_handle_t *h) { (void)h; }

static int backend_run(sockserv_server *server, volatile int *stop, long limit_ms)
{
    struct uv_ctx c;
    uv_loop_t loop;
    int fd = -1;
    (void)stop; /* drive_once reports it */
    memset(&c, 0, sizeof c);
    c.srv = server;
    REQUIRE(uv_loop_init(&loop) == 0);
    REQUIRE_OK(sockserv_server_loop_fd(server, &fd));
    REQUIRE(uv_poll_init(&loop, &c.poll, fd) == 0);
    REQUIRE(uv_timer_init(&loop, &c.timer) == 0);
    REQUIRE(uv_timer_init(&loop, &c.limit) == 0);
    c.poll.data = c.timer.data = c.limit.data = &c;
    REQUIRE(uv_poll_start(&c.poll, UV_READABLE, on_poll) == 0);
    uv_timer_start(&c.limit, on_limit, (uint64_t)limit_ms, 0);
    uv_drive(&c); /* the first deadline, before any wake-up */
    if (!done)
        uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&c.poll, on_closed);
    uv_close((uv_handle_t *)&c.timer, on_closed);
    uv_close((uv_handle_t *)&c.limit, on_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    return c.failed ? 1 : 0;
}
