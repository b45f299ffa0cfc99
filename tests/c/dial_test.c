/*
 * Outgoing connections from C (issue 12):
 *
 * 1. sockserv_server_dial on an unbound engine (sockserv_server_new_unbound):
 *    a dialed connection echoes through an event server with the same
 *    callbacks as an accepted one; sockserv_dialer_close closes it
 *    (on_close once, SOCKSERV_OK); a refused dial is reported with
 *    SOCKSERV_ERR_CONNECTION_REFUSED and, with 0, 0, only once; a key
 *    mismatch with SOCKSERV_ERR_AUTH_FAILED, and sockserv_dialer_free from
 *    inside that report stops every later one; a dialer reconnects to a
 *    server that restarts on the same port; closed while connecting, it
 *    reports nothing.
 * 2. The standalone client from a loop: sockserv_connect_start returns at
 *    once (< 50 ms) even against a peer that never answers, and
 *    sockserv_conn_continue drives the connect and handshake from a
 *    level-triggered epoll loop; three frames that arrive together are
 *    all received by a loop that receives once per wake-up and then while
 *    sockserv_conn_pending says so (the bug: epoll stays quiet
 *    about the two buffered inside sockserv). Timeouts, refusal and close
 *    while connecting.
 *
 * Run by tests/c_api/dial.rs. Prints "dial_test: N checks, F failed";
 * exits 1 on any failure. Every wait is bounded in time.
 */
#define _POSIX_C_SOURCE 200809L

#include "check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define WAIT_MS 10000

static const char KEY[] = "dial-test-key";

/* Upper time bounds stretch by SOCKSERV_TIME_SCALE (valgrind, sanitizers). */
static long long scale(void)
{
    const char *v = getenv("SOCKSERV_TIME_SCALE");
    long long n = v ? atoll(v) : 1;
    return n >= 1 ? n : 1;
}

/* What the callbacks saw; they run on I/O threads, so it is locked. */
struct seen {
    pthread_mutex_t lock;
    int opened, closed, echoed, errors;
    sockserv_result last_close, last_error;
    char error_detail[512];
    bool free_in_report;
};

static struct seen seen = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, SOCKSERV_OK, SOCKSERV_OK, "", false};

static int read_count(const int *counter)
{
    int v;
    pthread_mutex_lock(&seen.lock);
    v = *counter;
    pthread_mutex_unlock(&seen.lock);
    return v;
}

static bool wait_count(const int *counter, int want)
{
    long long end = now_ms() + WAIT_MS;
    while (now_ms() < end) {
        if (read_count(counter) >= want)
            return true;
        sleep_ms(2);
    }
    return read_count(counter) >= want;
}

static void reset_seen(void)
{
    pthread_mutex_lock(&seen.lock);
    seen.opened = seen.closed = seen.echoed = seen.errors = 0;
    seen.last_close = seen.last_error = SOCKSERV_OK;
    seen.error_detail[0] = 0;
    seen.free_in_report = false;
    pthread_mutex_unlock(&seen.lock);
}

static void echo_frame(void *userdata, sockserv_conn *conn, const uint8_t *data, size_t len)
{
    (void)userdata;
    sockserv_conn_send(conn, data, len);
}

static void dialed_open(void *userdata, sockserv_conn *conn)
{
    (void)userdata;
    pthread_mutex_lock(&seen.lock);
    seen.opened++;
    pthread_mutex_unlock(&seen.lock);
    sockserv_conn_send(conn, (const uint8_t *)"dialed", 6);
}

static void dialed_frame(void *userdata, sockserv_conn *conn, const uint8_t *data, size_t len)
{
    (void)userdata;
    (void)conn;
    pthread_mutex_lock(&seen.lock);
    if (len == 6 && memcmp(data, "dialed", 6) == 0)
        seen.echoed++;
    pthread_mutex_unlock(&seen.lock);
}

static void dialed_close(void *userdata, sockserv_conn *conn, sockserv_result reason)
{
    (void)userdata;
    (void)conn;
    pthread_mutex_lock(&seen.lock);
    seen.closed++;
    seen.last_close = reason;
    pthread_mutex_unlock(&seen.lock);
}

static void dial_error(void *userdata, sockserv_dialer *dialer, int code, const char *detail_text)
{
    bool free_it;
    (void)userdata;
    pthread_mutex_lock(&seen.lock);
    seen.errors++;
    seen.last_error = (sockserv_result)code;
    snprintf(seen.error_detail, sizeof seen.error_detail, "%s", detail_text);
    /* The second report frees it: the first comes before the test could
     * know, the second only after a backoff (100 ms by default). */
    free_it = seen.free_in_report && seen.errors == 2;
    pthread_mutex_unlock(&seen.lock);
    if (free_it)
        sockserv_dialer_free(dialer); /* allowed from its own report */
}

static sockserv_config *keyed(const char *key)
{
    sockserv_config *config = NULL;
    REQUIRE_OK(sockserv_config_new(&config));
    REQUIRE_OK(sockserv_config_set_auth_key(config, (const uint8_t *)key, strlen(key)));
    return config;
}

static int silent_listener(char *addr, size_t len, bool fill, int fillers[2]);
static void close_listener(int fd, int fillers[2]);

static void test_dialing(void)
{
    sockserv_config *config = keyed(KEY), *wrong = keyed("another key");
    sockserv_server *server = NULL, *engine = NULL;
    sockserv_dialer *dialer = UNTOUCHED;
    char addr[SOCKSERV_ADDRSTRLEN], closed_addr[SOCKSERV_ADDRSTRLEN];
    size_t needed = 0;

    REQUIRE_OK(sockserv_server_new("tcp://127.0.0.1:0", config, &server));
    REQUIRE_OK(sockserv_server_set_event_handlers(server, NULL, echo_frame, NULL, NULL));
    REQUIRE_OK(sockserv_server_start(server));
    REQUIRE_OK(sockserv_server_local_addr(server, addr, sizeof addr, &needed));

    REQUIRE_OK(sockserv_server_new_unbound(config, &engine));
    REQUIRE_OK(sockserv_server_local_addr(engine, closed_addr, sizeof closed_addr, &needed));
    CHECK(closed_addr[0] == 0);
    /* Not started yet: nothing to dial from. */
    EXPECT_RC(sockserv_server_dial(engine, addr, NULL, &dialer), SOCKSERV_ERR_INVALID_STATE);
    CHECK(dialer == UNTOUCHED);
    REQUIRE_OK(sockserv_server_set_event_handlers(engine, dialed_open, dialed_frame, dialed_close,
                                                  NULL));
    REQUIRE_OK(sockserv_server_set_dial_error_handler(engine, dial_error, NULL));
    REQUIRE_OK(sockserv_server_start(engine));

    /* Echo through a dialed connection, then close it. */
    reset_seen();
    REQUIRE_OK(sockserv_server_dial(engine, addr, NULL, &dialer));
    CHECK(wait_count(&seen.echoed, 1));
    CHECK(read_count(&seen.opened) == 1);
    EXPECT_RC(sockserv_dialer_close(dialer), SOCKSERV_OK);
    EXPECT_RC(sockserv_dialer_close(dialer), SOCKSERV_OK);
    CHECK(wait_count(&seen.closed, 1));
    CHECK(seen.last_close == SOCKSERV_OK);
    sleep_ms(200);
    CHECK(read_count(&seen.opened) == 1);
    CHECK(read_count(&seen.errors) == 0);
    EXPECT_RC(sockserv_dialer_set_reconnect(dialer, -1, 10), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_dialer_set_reconnect(dialer, 0, 10), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_dialer_set_reconnect(dialer, 20, 10), SOCKSERV_ERR_INVALID_ARGUMENT);
    sockserv_dialer_free(dialer);

    /* A refused dial, once: reported once, with its code. */
    {
        sockserv_server *gone = NULL;
        REQUIRE_OK(sockserv_server_new("tcp://127.0.0.1:0", NULL, &gone));
        REQUIRE_OK(sockserv_server_local_addr(gone, closed_addr, sizeof closed_addr, &needed));
        sockserv_server_free(gone);
    }
    reset_seen();
    REQUIRE_OK(sockserv_server_dial(engine, closed_addr, NULL, &dialer));
    EXPECT_RC(sockserv_dialer_set_reconnect(dialer, 0, 0), SOCKSERV_OK);
    CHECK(wait_count(&seen.errors, 1));
    sleep_ms(400);
    CHECK(read_count(&seen.errors) == 1);
    CHECK(seen.last_error == SOCKSERV_ERR_CONNECTION_REFUSED);
    CHECK(strstr(seen.error_detail, "connecting to tcp://127.0.0.1:") != NULL);
    sockserv_dialer_free(dialer);

    /* The wrong key: AUTH_FAILED; freed inside its second report (the
     * handle is not touched here after the dial), none follows: without
     * the free, a third would come 200 ms after the second. */
    reset_seen();
    seen.free_in_report = true;
    REQUIRE_OK(sockserv_server_dial(engine, addr, wrong, &dialer));
    CHECK(wait_count(&seen.errors, 2));
    sleep_ms(400);
    CHECK(read_count(&seen.errors) == 2);
    CHECK(seen.last_error == SOCKSERV_ERR_AUTH_FAILED);
    CHECK(read_count(&seen.opened) == 0);

    /* Reconnect: the server goes away and comes back on the same port. */
    reset_seen();
    REQUIRE_OK(sockserv_server_dial(engine, addr, NULL, &dialer));
    REQUIRE_OK(sockserv_dialer_set_reconnect(dialer, 20, 100));
    CHECK(wait_count(&seen.echoed, 1));
    sockserv_server_free(server);
    CHECK(wait_count(&seen.closed, 1));
    CHECK(wait_count(&seen.errors, 1)); /* refused while it is down */
    CHECK(seen.last_error == SOCKSERV_ERR_CONNECTION_REFUSED);
    REQUIRE_OK(sockserv_server_new(addr, config, &server));
    REQUIRE_OK(sockserv_server_set_event_handlers(server, NULL, echo_frame, NULL, NULL));
    REQUIRE_OK(sockserv_server_start(server));
    CHECK(wait_count(&seen.echoed, 2));
    CHECK(read_count(&seen.opened) == 2);
    /* Bounded: one attempt per 100 ms at most while it was down. */
    CHECK(read_count(&seen.errors) < 100);
    sockserv_dialer_free(dialer);

    /* Closed while its connect gets no answer: nothing is reported. */
    {
        int fillers[2];
        char silent[SOCKSERV_ADDRSTRLEN];
        int lfd = silent_listener(silent, sizeof silent, true, fillers);
        reset_seen();
        REQUIRE_OK(sockserv_server_dial(engine, silent, NULL, &dialer));
        sleep_ms(100);
        EXPECT_RC(sockserv_dialer_close(dialer), SOCKSERV_OK);
        sockserv_dialer_free(dialer);
        sleep_ms(200);
        CHECK(read_count(&seen.errors) == 0);
        CHECK(read_count(&seen.opened) == 0);
        close_listener(lfd, fillers);
    }

    sockserv_server_free(engine);
    sockserv_server_free(server);
    sockserv_config_free(config);
    sockserv_config_free(wrong);
}

/* The server side of the loop test: "burst" is answered with three
 * frames, queued in one callback, so they leave in one write. */
static void burst_frame(void *userdata, sockserv_conn *conn, const uint8_t *data, size_t len)
{
    (void)userdata;
    if (len == 5 && memcmp(data, "burst", 5) == 0) {
        sockserv_conn_send(conn, (const uint8_t *)"one", 3);
        sockserv_conn_send(conn, (const uint8_t *)"two", 3);
        sockserv_conn_send(conn, (const uint8_t *)"three", 5);
    } else {
        sockserv_conn_send(conn, data, len);
    }
}

/* Watches `fd` in `ep` (level-triggered) for `events`. */
static void watch(int ep, int fd, unsigned events)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.fd = fd;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) != 0)
        REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);
}

/* The longest one sockserv_conn_continue call took in the last drive(). */
static long long longest_continue_ms;

/* Drives sockserv_conn_continue from the epoll loop `ep` until it is done
 * or `limit_ms` passed; returns its last code. `*waits` counts the times it
 * said WOULD_BLOCK (the loop had to wait). */
static sockserv_result drive(sockserv_conn *conn, int ep, long long limit_ms, int *waits)
{
    long long end = now_ms() + limit_ms;
    sockserv_result rc = SOCKSERV_ERR_WOULD_BLOCK;
    longest_continue_ms = 0;
    while (now_ms() < end) {
        bool want_write = false;
        int fd = -1, ms = -1;
        long long left;
        struct epoll_event ev;
        long long t = now_ms();
        rc = sockserv_conn_continue(conn, &want_write);
        t = now_ms() - t;
        if (t > longest_continue_ms)
            longest_continue_ms = t;
        if (rc != SOCKSERV_ERR_WOULD_BLOCK)
            return rc;
        if (waits)
            (*waits)++;
        REQUIRE_OK(sockserv_conn_fd(conn, &fd));
        REQUIRE(fd >= 0);
        watch(ep, fd, want_write ? EPOLLOUT : EPOLLIN);
        /* As a loop does: wait for the fd, but no longer than the deadline
         * that only continue notices (a silent peer never wakes us). */
        REQUIRE_OK(sockserv_conn_continue_timeout_ms(conn, &ms));
        CHECK(ms >= 0);
        left = end - now_ms();
        (void)epoll_wait(ep, &ev, 1, (int)(ms >= 0 && ms < left ? ms : left > 0 ? left : 0));
    }
    return rc;
}

/* A TCP listener on 127.0.0.1 that never accepts; with `fill`, its accept
 * queue is full, so a new connect gets no answer at all. */
static int silent_listener(char *addr, size_t len, bool fill, int fillers[2])
{
    struct sockaddr_in sa;
    socklen_t sa_len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), i;
    REQUIRE(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    REQUIRE(listen(fd, fill ? 0 : 8) == 0);
    REQUIRE(getsockname(fd, (struct sockaddr *)&sa, &sa_len) == 0);
    snprintf(addr, len, "tcp://127.0.0.1:%d", ntohs(sa.sin_port));
    for (i = 0; i < 2; i++) {
        fillers[i] = -1;
        if (!fill)
            continue;
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        REQUIRE(fillers[i] >= 0);
        (void)connect(fillers[i], (struct sockaddr *)&sa, sizeof sa);
        sleep_ms(20);
    }
    return fd;
}

static void close_listener(int fd, int fillers[2])
{
    int i;
    for (i = 0; i < 2; i++)
        if (fillers[i] >= 0)
            close(fillers[i]);
    close(fd);
}

static void test_loop_client(void)
{
    sockserv_config *config = keyed(KEY);
    sockserv_server *server = NULL;
    sockserv_conn *conn = UNTOUCHED;
    char addr[SOCKSERV_ADDRSTRLEN], got[16];
    size_t needed = 0, pending = 99, len = 0;
    int ep = epoll_create1(EPOLL_CLOEXEC), fd = -1, received = 0;
    long long t0;
    struct epoll_event ev;
    bool want_write = true;

    REQUIRE(ep >= 0);
    REQUIRE_OK(sockserv_server_new("tcp://127.0.0.1:0", config, &server));
    REQUIRE_OK(sockserv_server_set_event_handlers(server, NULL, burst_frame, NULL, NULL));
    REQUIRE_OK(sockserv_server_start(server));
    REQUIRE_OK(sockserv_server_local_addr(server, addr, sizeof addr, &needed));

    /* Connect and handshake from the loop. */
    t0 = now_ms();
    REQUIRE_OK(sockserv_connect_start(addr, config, &conn));
    CHECK(now_ms() - t0 < 50 * scale());
    EXPECT_RC(sockserv_conn_send(conn, (const uint8_t *)"early", 5), SOCKSERV_ERR_INVALID_STATE);
    EXPECT_RC(sockserv_conn_pending(conn, &pending), SOCKSERV_ERR_INVALID_STATE);
    /* A fast peer may let one continue finish it all: no wait is owed. */
    EXPECT_RC(drive(conn, ep, WAIT_MS, NULL), SOCKSERV_OK);
    EXPECT_RC(sockserv_conn_continue(conn, &want_write), SOCKSERV_OK);
    CHECK(!want_write);
    EXPECT_RC(sockserv_conn_pending(conn, &pending), SOCKSERV_OK);
    CHECK(pending == 0);
    /* Non-blocking once established: nothing there yet. */
    EXPECT_RC(sockserv_conn_recv_into(conn, (uint8_t *)got, sizeof got, &len),
              SOCKSERV_ERR_WOULD_BLOCK);

    /* Three frames arrive together; the loop receives one per wake-up. */
    REQUIRE_OK(sockserv_conn_fd(conn, &fd));
    watch(ep, fd, EPOLLIN);
    EXPECT_RC(sockserv_conn_send(conn, (const uint8_t *)"burst", 5), SOCKSERV_OK);
    CHECK(epoll_wait(ep, &ev, 1, WAIT_MS) == 1);
    sleep_ms(20); /* all three are on the socket by now */
    EXPECT_RC(sockserv_conn_recv_into(conn, (uint8_t *)got, sizeof got, &len), SOCKSERV_OK);
    received++;
    CHECK(len == 3 && memcmp(got, "one", 3) == 0);
    EXPECT_RC(sockserv_conn_pending(conn, &pending), SOCKSERV_OK);
    CHECK(pending == 2);
    /* The trap: the socket is empty, so a level-triggered epoll does not
     * wake again for the two frames inside sockserv. */
    CHECK(epoll_wait(ep, &ev, 1, 100) == 0);
    while (received < 10 && sockserv_conn_pending(conn, &pending) == SOCKSERV_OK && pending > 0) {
        EXPECT_RC(sockserv_conn_recv_into(conn, (uint8_t *)got, sizeof got, &len), SOCKSERV_OK);
        received++;
    }
    CHECK(received == 3);
    CHECK(len == 5 && memcmp(got, "three", 5) == 0);
    EXPECT_RC(sockserv_conn_recv_into(conn, (uint8_t *)got, sizeof got, &len),
              SOCKSERV_ERR_WOULD_BLOCK);
    sockserv_conn_free(conn);

    /* Without a key there is no handshake: established as soon as the
     * TCP connect is (this keyed server would refuse its first frame). */
    REQUIRE_OK(sockserv_connect_start(addr, NULL, &conn));
    EXPECT_RC(drive(conn, ep, WAIT_MS, NULL), SOCKSERV_OK);
    sockserv_conn_free(conn);
    sockserv_server_free(server);

    /* A peer that accepts the TCP connect but never says a word: the
     * handshake times out in continue, never blocking the loop. */
    {
        int fillers[2];
        char silent[SOCKSERV_ADDRSTRLEN];
        int lfd = silent_listener(silent, sizeof silent, false, fillers);
        sockserv_config *quick = keyed(KEY);
        long long took;
        int silent_waits = 0;
        REQUIRE_OK(sockserv_config_set_handshake_timeout_ms(quick, 300));
        t0 = now_ms();
        REQUIRE_OK(sockserv_connect_start(silent, quick, &conn));
        took = now_ms() - t0;
        printf("connect_start to a silent peer returned in %lld ms\n", took);
        CHECK(took < 50 * scale());
        REQUIRE_OK(sockserv_conn_fd(conn, &fd));
        CHECK(fd >= 0);
        EXPECT_RC(drive(conn, ep, WAIT_MS, &silent_waits), SOCKSERV_ERR_TIMED_OUT);
        took = now_ms() - t0;
        printf("its handshake (timeout 300 ms) failed in continue after %lld ms, %d waits\n",
               took, silent_waits);
        CHECK(took >= 290 && took < 5000 * scale());
        /* The loop slept until the deadline continue_timeout_ms gave, not
         * in short polls. */
        CHECK(silent_waits <= 5);
        /* And no continue call waited for the peer itself. */
        CHECK(longest_continue_ms < 100 * scale());
        EXPECT_DETAIL("timed out after 300 ms");
        /* The failure stays. */
        EXPECT_RC(sockserv_conn_continue(conn, &want_write), SOCKSERV_ERR_TIMED_OUT);
        sockserv_conn_free(conn);
        close_listener(lfd, fillers);

        /* A peer whose accept queue is full: no answer to the connect. */
        lfd = silent_listener(silent, sizeof silent, true, fillers);
        REQUIRE_OK(sockserv_config_set_connect_timeout_ms(quick, 200));
        t0 = now_ms();
        REQUIRE_OK(sockserv_connect_start(silent, quick, &conn));
        CHECK(now_ms() - t0 < 50 * scale());
        EXPECT_RC(sockserv_conn_continue(conn, &want_write), SOCKSERV_ERR_WOULD_BLOCK);
        CHECK(want_write);
        EXPECT_RC(drive(conn, ep, WAIT_MS, NULL), SOCKSERV_ERR_TIMED_OUT);
        took = now_ms() - t0;
        CHECK(took >= 190 && took < 5000 * scale());
        sockserv_conn_free(conn);

        /* Closed while connecting: the socket goes, continue says so. */
        REQUIRE_OK(sockserv_connect_start(silent, quick, &conn));
        EXPECT_RC(sockserv_conn_close(conn), SOCKSERV_OK);
        EXPECT_RC(sockserv_conn_continue(conn, &want_write), SOCKSERV_ERR_BROKEN);
        REQUIRE_OK(sockserv_conn_fd(conn, &fd));
        CHECK(fd == -1);
        sockserv_conn_free(conn);
        close_listener(lfd, fillers);
        sockserv_config_free(quick);
    }

    /* Refused: at once or on the first continue. */
    {
        sockserv_server *gone = NULL;
        sockserv_result rc;
        REQUIRE_OK(sockserv_server_new("tcp://127.0.0.1:0", NULL, &gone));
        REQUIRE_OK(sockserv_server_local_addr(gone, addr, sizeof addr, &needed));
        sockserv_server_free(gone);
        rc = sockserv_connect_start(addr, NULL, &conn);
        if (rc == SOCKSERV_OK) {
            rc = drive(conn, ep, WAIT_MS, NULL);
            sockserv_conn_free(conn);
        }
        CHECK(rc == SOCKSERV_ERR_CONNECTION_REFUSED);
    }
    close(ep);
    sockserv_config_free(config);
}

int main(void)
{
    test_dialing();
    test_loop_client();
    printf("dial_test: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
