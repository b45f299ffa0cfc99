/*
 * The scenarios of tests/loops.rs, shared by the programs that drive an
 * embedded sockserv server from a real event loop: loop_uv.c (libuv),
 * loop_event.c (libevent, level- or edge-triggered) and loop_poll.c (a
 * plain poll(2) loop). Each of those defines backend_run() after including
 * this file; everything else (the callbacks, the checks, main) is here, so
 * the loops differ only in how they wait.
 *
 *   PROG serve ADDR [-k KEY] [-q MAX_QUEUED] [-i IDLE_MS] [-h HANDSHAKE_MS]
 *        echo server; the frames "quit", "victim", "close-other" and
 *        "flood" are commands (below); prints "listening ADDR"
 *   PROG dial ADDR COUNT [-k KEY]
 *        an engine without a listener and one dialer to ADDR
 *        (reconnecting every 50..400 ms); on each connection it sends one
 *        frame and waits for the echo; done after COUNT connections
 *   PROG self COUNT [-k KEY]
 *        a server and a dialer to it in the same loop: COUNT frames of
 *        growing sizes round trip and are compared
 *
 * Every scenario ends from inside a callback with sockserv_server_shutdown
 * (the loop then stops), counts the threads of the process in every
 * callback (an embedded server has none of its own: "threads 1" at the
 * end) and exits 0 only if every check passed. Output is one line per
 * event, flushed at once, for the test to wait on.
 */
#ifndef SOCKSERV_TEST_LOOP_COMMON_H
#define SOCKSERV_TEST_LOOP_COMMON_H

#include "check.h"

#include <dirent.h>
#include <stdint.h>
#include <sys/resource.h>

/* The backend: drives `srv` (started embedded) until `*done` is set after a
 * call to sockserv_server_process, or `limit_ms` passed (then 1). */
static int backend_run(sockserv_server *srv, volatile int *done, long limit_ms);
static const char *backend_name(void);

/* One sockserv_server_process and what comes of it, for every backend:
 * returns the time to wait next (-1: no deadline) or -2 to stop. */
static volatile int done;
static long long processed;

static int drive_once(sockserv_server *srv)
{
    int ms = -1;
    sockserv_result rc = sockserv_server_process(srv);
    processed++;
    if (done)
        return -2;
    if (rc != SOCKSERV_OK) {
        CHECK(rc == SOCKSERV_OK);
        fprintf(stderr, "%s: sockserv_server_process: %s (%s)\n", backend_name(),
                sockserv_strerror(rc), detail());
        return -2;
    }
    rc = sockserv_server_loop_timeout_ms(srv, &ms);
    if (!CHECK(rc == SOCKSERV_OK))
        return -2;
    CHECK(ms >= -1);
    return ms;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#include <stdarg.h>
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* ---- threads ---- */

static int max_threads;

static int count_threads(void)
{
    int n = 0;
    struct dirent *e;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void note_threads(void)
{
    int n = count_threads();
    if (n > max_threads)
        max_threads = n;
}

/* ---- the server ---- */

static sockserv_server *srv;
static sockserv_conn *victim; /* retained */
static long long idle_ms;      /* -i: the idle timeout set */
static int opened, closed, timed_out;

struct peer {
    long long opened_at;
};

static void send_text(sockserv_conn *conn, const char *text)
{
    CHECK(sockserv_conn_send(conn, (const uint8_t *)text, strlen(text)) == SOCKSERV_OK);
}

static void quit(void)
{
    /* Shutdown from inside a callback is allowed; the loop stops after
     * this sockserv_server_process returns. */
    CHECK(sockserv_server_shutdown(srv) == SOCKSERV_OK);
    done = 1;
}

static void serve_open(void *ud, sockserv_conn *conn)
{
    struct peer *p = malloc(sizeof *p);
    (void)ud;
    note_threads();
    REQUIRE(p != NULL);
    p->opened_at = now_ms();
    CHECK(sockserv_conn_set_userdata(conn, p) == SOCKSERV_OK);
    opened++;
}

static int is(const uint8_t *data, size_t len, const char *word)
{
    return len == strlen(word) && memcmp(data, word, len) == 0;
}

static void serve_frame(void *ud, sockserv_conn *conn, const uint8_t *data, size_t len)
{
    static uint8_t block[64 * 1024];
    (void)ud;
    if (opened % 100 == 0)
        note_threads();
    if (is(data, len, "quit")) {
        say("quit");
        quit();
    } else if (is(data, len, "victim")) {
        /* Kept beyond this callback: a reference of ours. */
        CHECK(victim == NULL);
        CHECK(sockserv_conn_retain(conn) == SOCKSERV_OK);
        victim = conn;
        send_text(conn, "victim");
    } else if (is(data, len, "close-other")) {
        /* One callback closes another connection. */
        CHECK(victim != NULL);
        if (victim)
            CHECK(sockserv_conn_close(victim) == SOCKSERV_OK);
        send_text(conn, "closed");
    } else if (is(data, len, "flood")) {
        /* A peer that does not read: queue 64 KiB frames until sockserv
         * refuses more; the count must stay bounded by the queue limit. */
        int n = 0;
        sockserv_result rc = SOCKSERV_OK;
        while (n < 4096) {
            memset(block, n & 0xff, sizeof block);
            rc = sockserv_conn_send(conn, block, sizeof block);
            if (rc != SOCKSERV_OK)
                break;
            n++;
        }
        CHECK(rc == SOCKSERV_ERR_WOULD_BLOCK);
        say("flood queued %d", n);
    } else {
        CHECK(sockserv_conn_send(conn, data, len) == SOCKSERV_OK);
    }
}

static void serve_close(void *ud, sockserv_conn *conn, sockserv_result reason)
{
    struct peer *p = sockserv_conn_get_userdata(conn);
    (void)ud;
    note_threads();
    closed++;
    if (conn == victim) {
        say("victim closed %d", (int)reason);
        sockserv_conn_release(victim);
        victim = NULL;
    }
    if (reason == SOCKSERV_ERR_TIMED_OUT && p) {
        long long quiet = now_ms() - p->opened_at;
        timed_out++;
        say("timed out after %lld ms", quiet);
        /* Fired by the loop's timer alone (nothing was sent), and neither
         * early nor very late. */
        CHECK(quiet >= idle_ms - 5);
        CHECK(quiet < idle_ms + 2000);
    }
    free(p);
}

/* ---- the dialer ---- */

static int dial_count, dial_opens, dial_echoes, dial_errors;
static long long dial_down_at;

static void dial_open(void *ud, sockserv_conn *conn)
{
    char hello[32];
    (void)ud;
    note_threads();
    dial_opens++;
    say("open %d", dial_opens);
    snprintf(hello, sizeof hello, "hello %d", dial_opens);
    send_text(conn, hello);
}

static void dial_frame(void *ud, sockserv_conn *conn, const uint8_t *data, size_t len)
{
    char hello[32];
    (void)ud;
    (void)conn;
    note_threads();
    snprintf(hello, sizeof hello, "hello %d", dial_opens);
    CHECK(is(data, len, hello));
    dial_echoes++;
    say("echo %d", dial_echoes);
    if (dial_echoes == dial_count)
        quit();
}

static void dial_close(void *ud, sockserv_conn *conn, sockserv_result reason)
{
    (void)ud;
    (void)conn;
    note_threads();
    dial_down_at = now_ms();
    say("down %d", (int)reason);
}

static void dial_error(void *ud, sockserv_dialer *d, int code, const char *why)
{
    (void)ud;
    (void)d;
    note_threads();
    CHECK(code != SOCKSERV_OK);
    CHECK(why != NULL);
    /* Reported once per failed attempt, not in a busy loop: the backoff
     * (50 ms, doubling to 400) bounds how many fit in a test. */
    dial_errors++;
    CHECK(dial_errors < 200);
    say("dial error %d", code);
}

/* ---- self: a server and a dialer to it, in one loop ---- */

static int self_count, self_sent, self_back;
static sockserv_conn *self_client; /* lent; valid until its on_close */

static size_t self_size(int i)
{
    /* 0, 1, ... then growing to 256 KiB: several reads and writes each */
    return i < 8 ? (size_t)i : ((size_t)i * 7919u) % (256u * 1024u);
}

static void self_fill(uint8_t *buf, size_t len, int i)
{
    size_t k;
    for (k = 0; k < len; k++)
        buf[k] = (uint8_t)(k * 31u + (unsigned)i);
}

static void self_send_next(void)
{
    static uint8_t buf[256 * 1024];
    size_t len = self_size(self_sent);
    self_fill(buf, len, self_sent);
    CHECK(sockserv_conn_send(self_client, buf, len) == SOCKSERV_OK);
    self_sent++;
}

static char self_addr[SOCKSERV_ADDRSTRLEN];

static int is_dialed(sockserv_conn *conn)
{
    /* The dialed end's peer is the server's own address. */
    char peer[SOCKSERV_ADDRSTRLEN];
    size_t n;
    CHECK(sockserv_conn_peer_addr(conn, peer, sizeof peer, &n) == SOCKSERV_OK);
    return strcmp(peer, self_addr) == 0;
}

static void self_open(void *ud, sockserv_conn *conn)
{
    (void)ud;
    note_threads();
    if (!is_dialed(conn))
        return;
    CHECK(self_client == NULL);
    self_client = conn;
    /* Keep 4 in flight: pipelined, not ping-pong. */
    while (self_sent < self_count && self_sent < 4)
        self_send_next();
}

static void self_frame(void *ud, sockserv_conn *conn, const uint8_t *data, size_t len)
{
    static uint8_t want[256 * 1024];
    (void)ud;
    if (conn != self_client) {
        CHECK(sockserv_conn_send(conn, data, len) == SOCKSERV_OK); /* the server side */
        return;
    }
    CHECK(len == self_size(self_back));
    self_fill(want, self_size(self_back), self_back);
    CHECK(len == self_size(self_back) && memcmp(data, want, len) == 0);
    self_back++;
    if (self_back == self_count) {
        note_threads();
        say("echoed %d", self_back);
        quit();
    } else if (self_sent < self_count) {
        self_send_next();
    }
}

static void self_close(void *ud, sockserv_conn *conn, sockserv_result reason)
{
    (void)ud;
    (void)reason;
    if (conn == self_client)
        self_client = NULL;
}

/* ---- main ---- */

static void raise_nofile(void)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

static int usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s serve ADDR [-k KEY] [-q MAX_QUEUED] [-i IDLE_MS] [-h HANDSHAKE_MS]\n"
            "       %s dial ADDR COUNT [-k KEY]\n"
            "       %s self COUNT [-k KEY]\n",
            prog, prog, prog);
    return 2;
}

int main(int argc, char **argv)
{
    sockserv_config *cfg;
    sockserv_dialer *dialer = NULL;
    const char *mode, *key = NULL;
    int i, first_opt, rc;
    long long t0;
    size_t n;

    if (argc < 3)
        return usage(argv[0]);
    mode = argv[1];
    first_opt = strcmp(mode, "dial") == 0 ? 4 : 3;
    if (argc < first_opt)
        return usage(argv[0]);
    REQUIRE_OK(sockserv_config_new(&cfg));
    for (i = first_opt; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-k") == 0)
            key = argv[i + 1];
        else if (strcmp(argv[i], "-q") == 0)
            REQUIRE_OK(sockserv_config_set_max_queued_bytes(cfg, (size_t)atol(argv[i + 1])));
        else if (strcmp(argv[i], "-h") == 0)
            REQUIRE_OK(sockserv_config_set_handshake_timeout_ms(cfg, (uint32_t)atol(argv[i + 1])));
        else if (strcmp(argv[i], "-i") == 0) {
            idle_ms = atol(argv[i + 1]);
            REQUIRE_OK(sockserv_config_set_idle_timeout_ms(cfg, (uint32_t)idle_ms));
        } else
            return usage(argv[0]);
    }
    if (i != argc)
        return usage(argv[0]);
    if (key)
        REQUIRE_OK(sockserv_config_set_auth_key(cfg, (const uint8_t *)key, strlen(key)));
    REQUIRE_OK(sockserv_config_set_max_connections(cfg, 4096));
    REQUIRE_OK(sockserv_config_set_backlog(cfg, 1024));
    raise_nofile();
    note_threads();

    if (strcmp(mode, "serve") == 0) {
        char addr[SOCKSERV_ADDRSTRLEN];
        REQUIRE_OK(sockserv_server_new(argv[2], cfg, &srv));
        REQUIRE_OK(sockserv_server_set_event_handlers(srv, serve_open, serve_frame, serve_close,
                                                      NULL));
        REQUIRE_OK(sockserv_server_start_embedded(srv));
        REQUIRE_OK(sockserv_server_local_addr(srv, addr, sizeof addr, &n));
        say("listening %s", addr);
    } else if (strcmp(mode, "dial") == 0) {
        dial_count = atoi(argv[3]);
        REQUIRE(dial_count > 0);
        REQUIRE_OK(sockserv_server_new_unbound(cfg, &srv));
        REQUIRE_OK(sockserv_server_set_event_handlers(srv, dial_open, dial_frame, dial_close,
                                                      NULL));
        REQUIRE_OK(sockserv_server_set_dial_error_handler(srv, dial_error, NULL));
        REQUIRE_OK(sockserv_server_start_embedded(srv));
        REQUIRE_OK(sockserv_server_dial(srv, argv[2], NULL, &dialer));
        REQUIRE_OK(sockserv_dialer_set_reconnect(dialer, 50, 400));
    } else if (strcmp(mode, "self") == 0) {
        self_count = atoi(argv[2]);
        REQUIRE(self_count > 0);
        REQUIRE_OK(sockserv_server_new("tcp://127.0.0.1:0", cfg, &srv));
        REQUIRE_OK(sockserv_server_set_event_handlers(srv, self_open, self_frame, self_close,
                                                      NULL));
        REQUIRE_OK(sockserv_server_start_embedded(srv));
        REQUIRE_OK(sockserv_server_local_addr(srv, self_addr, sizeof self_addr, &n));
        REQUIRE_OK(sockserv_server_dial(srv, self_addr, NULL, &dialer));
    } else {
        return usage(argv[0]);
    }
    sockserv_config_free(cfg);

    t0 = now_ms();
    rc = backend_run(srv, &done, 60000);
    CHECK(rc == 0);
    CHECK(done);
    note_threads();
    say("threads %d", max_threads);
    say("processed %lld in %lld ms", processed, now_ms() - t0);
    /* No thread of sockserv's, ever: only main (libuv and libevent start
     * none for polls and timers either). */
    CHECK(max_threads == 1);
    if (dialer) {
        CHECK(sockserv_dialer_close(dialer) == SOCKSERV_OK);
        sockserv_dialer_free(dialer);
    }
    if (victim)
        sockserv_conn_release(victim);
    sockserv_server_free(srv);
    if (strcmp(mode, "serve") == 0)
        say("opened %d closed %d timed-out %d", opened, closed, timed_out);
    if (strcmp(mode, "dial") == 0)
        say("opens %d echoes %d dial-errors %d", dial_opens, dial_echoes, dial_errors);
    say("%s: %d checks, %d failed", backend_name(), checks, failures);
    return failures ? 1 : 0;
}

#endif
