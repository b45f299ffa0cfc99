/*
 * uv_echo: sockserv inside a libuv loop. One thread, one uv_loop_t, no
 * sockserv threads: an echo server, and a dialer that connects to it (or
 * to another echo server), sends COUNT frames one after the other and
 * prints each echo.
 *
 *     ./uv_echo                          serve on a free port, dial it, 3 frames
 *     ./uv_echo -k secret -n 10 tcp://127.0.0.1:9000
 *     ./uv_echo -n 0 tcp://127.0.0.1:9000        serve only, until SIGINT/SIGTERM
 *     ./uv_echo tcp://127.0.0.1:0 tcp://127.0.0.1:9000   dial another server
 *
 * Prints "listening on ADDR", "echoed: frame N" for each echo, then
 * "done". Exits 0 when every frame came back intact.
 *
 * How a sockserv engine sits in a loop (the same for each of the two
 * engines here: the server, and an engine with no listener for dialing):
 * - a uv_poll_t watches sockserv_server_loop_fd for readability;
 * - after each wake-up (poll or timer) call sockserv_server_process, which
 *   does all ready work without blocking and runs the callbacks here, on
 *   the loop's thread;
 * - then ask sockserv_server_loop_timeout_ms and arm a uv_timer_t for
 *   that long (-1: no deadline; 0: more is ready, process again soon).
 */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "sockserv.h"

/* One sockserv engine watched by the loop. */
struct engine {
    sockserv_server *srv;
    uv_poll_t poll;
    uv_timer_t timer;
    int watched;
};

static struct engine server, client;
static uv_loop_t *loop;
static uv_signal_t sigint, sigterm;
static int count = 3, echoed, failed;

static void report(const char *what, sockserv_result rc)
{
    char detail[512];
    sockserv_last_error(detail, sizeof detail);
    fprintf(stderr, "uv_echo: %s: %s (%s)\n", what, sockserv_strerror(rc), detail);
}

/* ---- the loop side: the same for every engine ---- */

static void process(struct engine *e);

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    process(h->data);
}

static void on_deadline(uv_timer_t *h) { process(h->data); }

static void watch(struct engine *e)
{
    int fd = -1;
    sockserv_server_loop_fd(e->srv, &fd);
    uv_poll_init(loop, &e->poll, fd);
    uv_timer_init(loop, &e->timer);
    e->poll.data = e->timer.data = e;
    e->watched = 1;
    uv_poll_start(&e->poll, UV_READABLE, on_readable);
    process(e); /* its first deadline */
}

static void unwatch(struct engine *e)
{
    if (!e->watched)
        return;
    e->watched = 0;
    uv_close((uv_handle_t *)&e->poll, NULL);
    uv_close((uv_handle_t *)&e->timer, NULL);
}

/* Stops both engines and the signal watchers: uv_run returns once their
 * handles are closed. Safe from inside a sockserv callback. */
static void finish(void)
{
    if (server.srv)
        sockserv_server_shutdown(server.srv);
    if (client.srv)
        sockserv_server_shutdown(client.srv);
    unwatch(&server);
    unwatch(&client);
    if (!uv_is_closing((uv_handle_t *)&sigint)) {
        uv_close((uv_handle_t *)&sigint, NULL);
        uv_close((uv_handle_t *)&sigterm, NULL);
    }
}

static void process(struct engine *e)
{
    int ms = -1;
    sockserv_result rc;
    if (!e->watched)
        return;
    rc = sockserv_server_process(e->srv); /* the callbacks run in here */
    if (!e->watched)
        return; /* a callback finished the program */
    if (rc) {
        report("process", rc);
        failed = 1;
        finish();
        return;
    }
    sockserv_server_loop_timeout_ms(e->srv, &ms);
    if (ms < 0)
        uv_timer_stop(&e->timer);
    else /* 0 too: the timer fires on the next turn of the loop */
        uv_timer_start(&e->timer, on_deadline, (uint64_t)ms, 0);
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    finish();
}

/* ---- the server: echo ---- */

static void echo_frame(void *ud, sockserv_conn *conn, const uint8_t *data, size_t len)
{
    sockserv_result rc = sockserv_conn_send(conn, data, len); /* queued, never blocks */
    (void)ud;
    if (rc)
        report("echo", rc);
}

/* ---- the dialed connection: COUNT frames, one at a time ---- */

static void send_frame(sockserv_conn *conn, int i)
{
    char text[32];
    int n = snprintf(text, sizeof text, "frame %d", i);
    sockserv_result rc = sockserv_conn_send(conn, (const uint8_t *)text, (size_t)n);
    if (rc)
        report("send", rc);
}

static void dialed_open(void *ud, sockserv_conn *conn)
{
    (void)ud;
    send_frame(conn, echoed); /* after a reconnect, the one not echoed yet */
}

static void dialed_frame(void *ud, sockserv_conn *conn, const uint8_t *data, size_t len)
{
    char want[32];
    int n = snprintf(want, sizeof want, "frame %d", echoed);
    (void)ud;
    if (len != (size_t)n || memcmp(data, want, len) != 0) {
        fprintf(stderr, "uv_echo: got %.*s back, sent %s\n", (int)len, (const char *)data, want);
        failed = 1;
        finish();
        return;
    }
    printf("echoed: %s\n", want);
    fflush(stdout);
    if (++echoed == count) {
        printf("done\n");
        fflush(stdout);
        finish();
    } else {
        send_frame(conn, echoed);
    }
}

static void dialed_close(void *ud, sockserv_conn *conn, sockserv_result reason)
{
    (void)ud;
    (void)conn;
    if (echoed < count && reason != SOCKSERV_ERR_SHUTDOWN)
        fprintf(stderr, "uv_echo: connection lost (%s), redialing\n", sockserv_strerror(reason));
}

static void dial_failed(void *ud, sockserv_dialer *d, int code, const char *detail)
{
    (void)ud;
    (void)d;
    fprintf(stderr, "uv_echo: dial failed: %s (%s), retrying\n", sockserv_strerror(code), detail);
}

int main(int argc, char **argv)
{
    const char *listen_addr = "tcp://127.0.0.1:0", *dial_addr = NULL, *key = getenv("SOCKSERV_KEY");
    char addr[SOCKSERV_ADDRSTRLEN];
    sockserv_config *cfg;
    sockserv_dialer *dialer = NULL;
    sockserv_result rc;
    size_t n;
    int opt;

    while ((opt = getopt(argc, argv, "k:n:")) != -1) {
        if (opt == 'k')
            key = optarg;
        else if (opt == 'n')
            count = atoi(optarg);
        else {
            fprintf(stderr, "usage: %s [-k KEY] [-n COUNT] [LISTEN_ADDR [DIAL_ADDR]]\n", argv[0]);
            return 2;
        }
    }
    if (optind < argc)
        listen_addr = argv[optind++];
    if (optind < argc)
        dial_addr = argv[optind++];

    if ((rc = sockserv_config_new(&cfg)))
        return report("config", rc), 1;
    if (key && (rc = sockserv_config_set_auth_key(cfg, (const uint8_t *)key, strlen(key))))
        return report("key", rc), 1;

    /* The server: an event-driven one, started embedded (no threads). */
    if ((rc = sockserv_server_new(listen_addr, cfg, &server.srv)) ||
        (rc = sockserv_server_set_event_handlers(server.srv, NULL, echo_frame, NULL, NULL)) ||
        (rc = sockserv_server_start_embedded(server.srv)) ||
        (rc = sockserv_server_local_addr(server.srv, addr, sizeof addr, &n)))
        return report(listen_addr, rc), 1;
    printf("listening on %s\n", addr);
    fflush(stdout);

    /* The client side: an engine with no listener; its dialer connects
     * and authenticates without blocking, redials if the connection ends,
     * and its connection gets the same callbacks as an accepted one. */
    if (count > 0) {
        if ((rc = sockserv_server_new_unbound(cfg, &client.srv)) ||
            (rc = sockserv_server_set_event_handlers(client.srv, dialed_open, dialed_frame,
                                                     dialed_close, NULL)) ||
            (rc = sockserv_server_set_dial_error_handler(client.srv, dial_failed, NULL)) ||
            (rc = sockserv_server_start_embedded(client.srv)) ||
            (rc = sockserv_server_dial(client.srv, dial_addr ? dial_addr : addr, NULL, &dialer)))
            return report("dial", rc), 1;
    }
    sockserv_config_free(cfg);

    loop = uv_default_loop();
    uv_signal_init(loop, &sigint);
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    watch(&server);
    if (client.srv)
        watch(&client);
    uv_run(loop, UV_RUN_DEFAULT);

    if (dialer) {
        sockserv_dialer_close(dialer);
        sockserv_dialer_free(dialer);
    }
    sockserv_server_free(client.srv); /* NULL does nothing */
    sockserv_server_free(server.srv);
    uv_loop_close(loop);
    return failed ? 1 : 0;
}
