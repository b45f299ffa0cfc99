/*
 * Embedded mode from C: the scenarios every loop runs (tests/c/embed_poll.c
 * with poll(), tests/c/embed_epoll.c with epoll, level- or edge-triggered).
 * The program's own loop drives the server by the header's rule: wait on
 * sockserv_server_loop_fd for at most sockserv_server_loop_timeout_ms, then
 * sockserv_server_process. The wait is capped only by the scenario's limit
 * (never by a short poll interval), so an event the library failed to
 * report as "call again" (timeout 0) stalls the scenario and fails it; and
 * the quiet scenarios count process calls, so a library that always said 0
 * (a busy loop) fails too.
 *
 * The peers are a child process (fork, raw sockets, the wire format by
 * hand), so the thread count of this process is sockserv's alone: it must
 * not change when the server starts nor during traffic.
 */
#ifndef SOCKSERV_TEST_EMBED_COMMON_H
#define SOCKSERV_TEST_EMBED_COMMON_H

#include "check.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

/* The caller's loop: what each program provides. */
struct waiter {
    const char *name;
    void (*init)(int loop_fd);
    /* Waits until the loop fd is readable or `ms` passed (-1: no limit). */
    void (*wait)(int ms);
    void (*done)(void);
};

#define CONNS 1000
#define BURST 2000
#define FLOOD_FRAME (64 * 1024)

static int threads(void)
{
    DIR *dir = opendir("/proc/self/task");
    REQUIRE(dir != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(dir);
    return n;
}

static int baseline_threads;

/* What the callbacks saw in one scenario. */
struct seen {
    sockserv_server *server;
    int opened, closed, frames;
    int reasons[32];
    int thread_changes;
    sockserv_conn *victim;
    int victim_closes;
    sockserv_result victim_reason;
    int flood_sent;
    sockserv_result flood_rc;
    int process_calls;
};

static void on_open(void *ud, sockserv_conn *conn)
{
    (void)conn;
    struct seen *s = ud;
    s->opened++;
}

static void reply(sockserv_conn *conn, const char *text)
{
    CHECK(sockserv_conn_send(conn, (const uint8_t *)text, strlen(text)) == SOCKSERV_OK);
}

static int is(const uint8_t *data, size_t len, const char *text)
{
    return len == strlen(text) && memcmp(data, text, len) == 0;
}

static void on_frame(void *ud, sockserv_conn *conn, const uint8_t *data, size_t len)
{
    struct seen *s = ud;
    if (s->frames++ % 250 == 0 && threads() != baseline_threads)
        s->thread_changes++;
    if (is(data, len, "shutdown")) {
        CHECK(sockserv_server_shutdown(s->server) == SOCKSERV_OK);
        /* process is not reentrant: refused, nothing breaks. */
        CHECK(sockserv_server_process(s->server) == SOCKSERV_ERR_INVALID_STATE);
    } else if (is(data, len, "victim")) {
        REQUIRE_OK(sockserv_conn_retain(conn));
        s->victim = conn;
        reply(conn, "ok");
    } else if (is(data, len, "kill")) {
        /* Another connection, twice: closed once. */
        CHECK(sockserv_conn_close(s->victim) == SOCKSERV_OK);
        sockserv_result again = sockserv_conn_close(s->victim);
        CHECK(again == SOCKSERV_OK || again == SOCKSERV_ERR_CLOSED);
        reply(conn, "killed");
    } else if (is(data, len, "flood")) {
        static uint8_t big[FLOOD_FRAME];
        sockserv_result rc = SOCKSERV_OK;
        for (int i = 0; i < 100000 && rc == SOCKSERV_OK; i++) {
            rc = sockserv_conn_send(conn, big, sizeof big);
            if (rc == SOCKSERV_OK)
                s->flood_sent++;
        }
        s->flood_rc = rc;
    } else if (is(data, len, "count?")) {
        char text[64];
        snprintf(text, sizeof text, "count=%d", s->flood_sent);
        reply(conn, text);
    } else {
        sockserv_result rc = sockserv_conn_send(conn, data, len);
        CHECK(rc == SOCKSERV_OK);
    }
}

static void on_close(void *ud, sockserv_conn *conn, sockserv_result reason)
{
    struct seen *s = ud;
    s->closed++;
    if ((int)reason >= 0 && (int)reason < 32)
        s->reasons[reason]++;
    if (conn == s->victim) {
        s->victim_closes++;
        s->victim_reason = reason;
        /* Already closed for senders during the call. */
        CHECK(sockserv_conn_send(conn, (const uint8_t *)"x", 1) == SOCKSERV_ERR_CLOSED);
    }
}

static sockserv_server *embedded_server(const sockserv_config *config, struct seen *s)
{
    memset(s, 0, sizeof *s);
    sockserv_server *server;
    REQUIRE_OK(sockserv_server_new("tcp://127.0.0.1:0", config, &server));
    REQUIRE_OK(sockserv_server_set_event_handlers(server, on_open, on_frame, on_close, s));
    REQUIRE_OK(sockserv_server_start_embedded(server));
    CHECK(threads() == baseline_threads);
    s->server = server;
    return server;
}

static int port_of(sockserv_server *server)
{
    char addr[SOCKSERV_ADDRSTRLEN];
    size_t n;
    REQUIRE_OK(sockserv_server_local_addr(server, addr, sizeof addr, &n));
    return atoi(strrchr(addr, ':') + 1);
}

typedef int (*done_fn)(struct seen *s);

/* The caller's side of the rule, until `done` or `limit_ms`. Returns the
   result that ended it (SOCKSERV_ERR_TIMED_OUT: the limit). */
static sockserv_result run_loop(const struct waiter *w, struct seen *s, done_fn done,
                                long limit_ms)
{
    int fd = -1;
    REQUIRE_OK(sockserv_server_loop_fd(s->server, &fd));
    w->init(fd);
    long long end = now_ms() + limit_ms;
    sockserv_result rc = SOCKSERV_OK;
    while (!(done && done(s))) {
        int ms;
        rc = sockserv_server_loop_timeout_ms(s->server, &ms);
        if (rc != SOCKSERV_OK)
            break;
        long long left = end - now_ms();
        if (left <= 0) {
            rc = SOCKSERV_ERR_TIMED_OUT;
            break;
        }
        if (ms < 0 || ms > left)
            ms = (int)left;
        w->wait(ms);
        s->process_calls++;
        rc = sockserv_server_process(s->server);
        if (rc != SOCKSERV_OK)
            break;
    }
    w->done();
    return rc;
}

/* ---- the peers: a child process with raw sockets ---- */

static void raise_fd_limit(void)
{
    struct rlimit lim;
    REQUIRE(getrlimit(RLIMIT_NOFILE, &lim) == 0);
    lim.rlim_cur = lim.rlim_max;
    REQUIRE(setrlimit(RLIMIT_NOFILE, &lim) == 0);
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    /* Every read is bounded. */
    struct timeval tv = {10, 0};
    REQUIRE(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    return fd;
}

static void write_all(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        REQUIRE(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

/* Appends one frame (4-byte big-endian length, payload) to `out`. */
static size_t put_frame(uint8_t *out, const void *payload, size_t len)
{
    uint32_t n = htonl((uint32_t)len);
    memcpy(out, &n, 4);
    memcpy(out + 4, payload, len);
    return 4 + len;
}

static void send_frame(int fd, const char *text)
{
    uint8_t buf[256];
    size_t n = put_frame(buf, text, strlen(text));
    write_all(fd, buf, n);
}

static int read_full(int fd, uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One frame into `buf` (NUL-terminated when it fits); its length, or -1
   on end of stream, error or the 10 s timeout. */
static long recv_frame(int fd, uint8_t *buf, size_t cap)
{
    uint8_t header[4];
    if (read_full(fd, header, 4) < 0)
        return -1;
    uint32_t n;
    memcpy(&n, header, 4);
    n = ntohl(n);
    if (n >= cap || read_full(fd, buf, n) < 0)
        return -1;
    buf[n] = 0;
    return (long)n;
}

static int expect_frame(int fd, const char *text)
{
    uint8_t buf[256];
    long n = recv_frame(fd, buf, sizeof buf);
    return CHECK(n >= 0 && strcmp((char *)buf, text) == 0);
}

/* The end of stream (not a timeout). */
static int expect_end(int fd)
{
    uint8_t b;
    ssize_t n;
    do
        n = recv(fd, &b, 1, 0);
    while (n > 0 || (n < 0 && errno == EINTR));
    return CHECK(n == 0 || errno == ECONNRESET);
}

typedef void (*peer_fn)(int port);

static pid_t spawn_peer(peer_fn fn, int port)
{
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        /* The child's own count. */
        checks = failures = 0;
        fn(port);
        fflush(NULL);
        _exit(failures ? 1 : 0);
    }
    return pid;
}

static void reap(pid_t pid, const char *what)
{
    int status = 0;
    /* The peer's reads are bounded (10 s each): it ends. */
    REQUIRE(waitpid(pid, &status, 0) == pid);
    if (!CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        fprintf(stderr, "  the peer of %s failed\n", what);
}

/* ---- the scenarios ---- */

static void echo_peer(int port)
{
    raise_fd_limit();
    static int fds[CONNS];
    for (int i = 0; i < CONNS; i++)
        fds[i] = dial(port);
    /* Three frames in one write on every connection: all three come back. */
    for (int i = 0; i < CONNS; i++) {
        uint8_t buf[64];
        char text[16];
        size_t n = 0;
        for (int k = 0; k < 3; k++) {
            snprintf(text, sizeof text, "%c%d", 'a' + k, i);
            n += put_frame(buf + n, text, strlen(text));
        }
        write_all(fds[i], buf, n);
    }
    int good = 0;
    for (int i = 0; i < CONNS; i++) {
        int ok = 1;
        for (int k = 0; k < 3; k++) {
            char text[16];
            uint8_t buf[64];
            snprintf(text, sizeof text, "%c%d", 'a' + k, i);
            ok = ok && recv_frame(fds[i], buf, sizeof buf) >= 0 && strcmp((char *)buf, text) == 0;
        }
        good += ok;
    }
    CHECK(good == CONNS);
    /* A burst far over a connection's share of a turn, in one write. */
    static uint8_t burst[BURST * 8];
    size_t n = 0;
    for (uint32_t i = 0; i < BURST; i++) {
        uint32_t v = htonl(i);
        n += put_frame(burst + n, &v, 4);
    }
    write_all(fds[0], burst, n);
    int in_order = 1;
    for (uint32_t i = 0; i < BURST && in_order; i++) {
        uint8_t buf[16];
        uint32_t v;
        in_order = recv_frame(fds[0], buf, sizeof buf) == 4;
        memcpy(&v, buf, 4);
        in_order = in_order && ntohl(v) == i;
    }
    CHECK(in_order);
    for (int i = 0; i < CONNS; i++)
        close(fds[i]);
}

static int all_closed(struct seen *s) { return s->closed == CONNS; }

static void echo_1000_connections(const struct waiter *w)
{
    struct seen s;
    sockserv_server *server = embedded_server(NULL, &s);
    pid_t peer = spawn_peer(echo_peer, port_of(server));
    CHECK(run_loop(w, &s, all_closed, 60000) == SOCKSERV_OK);
    reap(peer, "echo");
    CHECK(s.opened == CONNS);
    CHECK(s.closed == CONNS && s.reasons[SOCKSERV_ERR_CLOSED] == CONNS);
    CHECK(s.frames == 3 * CONNS + BURST);
    CHECK(s.thread_changes == 0);
    CHECK(threads() == baseline_threads);
    sockserv_server_free(server);
    printf("%s: echo: %d connections, %d frames, %d process calls\n", w->name, s.opened,
           s.frames, s.process_calls);
}

static void flood_peer(int port)
{
    int p = dial(port);
    int q = dial(port);
    send_frame(p, "flood");
    /* p reads nothing for a while; q is served meanwhile. */
    sleep_ms(300);
    send_frame(q, "ping");
    expect_frame(q, "ping");
    send_frame(p, "count?");
    static uint8_t buf[FLOOD_FRAME + 1];
    int floods = 0, count = -1;
    for (;;) {
        long n = recv_frame(p, buf, sizeof buf);
        if (n == FLOOD_FRAME) {
            floods++;
            continue;
        }
        if (n > 0 && strncmp((char *)buf, "count=", 6) == 0)
            count = atoi((char *)buf + 6);
        break;
    }
    CHECK(count >= 0 && floods == count);
    close(p);
    close(q);
}

static int two_closed(struct seen *s) { return s->closed == 2; }

static void backpressure_with_a_peer_that_does_not_read(const struct waiter *w)
{
    sockserv_config *config;
    REQUIRE_OK(sockserv_config_new(&config));
    REQUIRE_OK(sockserv_config_set_max_queued_bytes(config, 256 * 1024));
    struct seen s;
    sockserv_server *server = embedded_server(config, &s);
    sockserv_config_free(config);
    pid_t peer = spawn_peer(flood_peer, port_of(server));
    CHECK(run_loop(w, &s, two_closed, 30000) == SOCKSERV_OK);
    reap(peer, "backpressure");
    CHECK(s.flood_rc == SOCKSERV_ERR_WOULD_BLOCK);
    CHECK(s.flood_sent >= 4);
    CHECK(s.reasons[SOCKSERV_ERR_CLOSED] == 2);
    sockserv_server_free(server);
    printf("%s: backpressure: %d frames of 64 KiB queued before WOULD_BLOCK\n", w->name,
           s.flood_sent);
}

static void silent_peer(int port)
{
    int fd = dial(port);
    long long start = now_ms();
    expect_end(fd);
    CHECK(now_ms() - start >= 250);
    close(fd);
}

static int one_closed(struct seen *s) { return s->closed == 1; }

static void idle_timeout_with_no_traffic(const struct waiter *w)
{
    sockserv_config *config;
    REQUIRE_OK(sockserv_config_new(&config));
    REQUIRE_OK(sockserv_config_set_idle_timeout_ms(config, 300));
    struct seen s;
    sockserv_server *server = embedded_server(config, &s);
    sockserv_config_free(config);
    pid_t peer = spawn_peer(silent_peer, port_of(server));
    long long start = now_ms();
    CHECK(run_loop(w, &s, one_closed, 10000) == SOCKSERV_OK);
    long long took = now_ms() - start;
    reap(peer, "idle timeout");
    CHECK(s.reasons[SOCKSERV_ERR_TIMED_OUT] == 1);
    CHECK(took >= 250);
    /* The loop slept until the deadline: no busy loop. */
    CHECK(s.process_calls <= 20);
    sockserv_server_free(server);
    printf("%s: idle timeout after %lld ms, %d process calls\n", w->name, took, s.process_calls);
}

static void challenged_peer(int port)
{
    int fd = dial(port);
    uint8_t buf[512];
    long long start = now_ms();
    /* The challenge comes; the peer never answers. */
    CHECK(recv_frame(fd, buf, sizeof buf) > 11 && memcmp(buf, "#CHALLENGE#", 11) == 0);
    expect_end(fd);
    CHECK(now_ms() - start >= 250);
    close(fd);
}

static int handshake_failed(struct seen *s)
{
    uint64_t n = 0;
    REQUIRE_OK(sockserv_server_stat(s->server, SOCKSERV_STAT_HANDSHAKE_FAILURES, &n));
    return n == 1;
}

static void handshake_timeout_with_no_traffic(const struct waiter *w)
{
    sockserv_config *config;
    REQUIRE_OK(sockserv_config_new(&config));
    REQUIRE_OK(sockserv_config_set_auth_key(config, (const uint8_t *)"embed-key", 9));
    REQUIRE_OK(sockserv_config_set_handshake_timeout_ms(config, 300));
    struct seen s;
    sockserv_server *server = embedded_server(config, &s);
    sockserv_config_free(config);
    pid_t peer = spawn_peer(challenged_peer, port_of(server));
    long long start = now_ms();
    CHECK(run_loop(w, &s, handshake_failed, 10000) == SOCKSERV_OK);
    long long took = now_ms() - start;
    reap(peer, "handshake timeout");
    CHECK(s.opened == 0 && s.closed == 0);
    CHECK(took >= 250);
    CHECK(s.process_calls <= 20);
    sockserv_server_free(server);
    printf("%s: handshake timeout after %lld ms, %d process calls\n", w->name, took,
           s.process_calls);
}

static void victim_peer(int port)
{
    int b = dial(port);
    send_frame(b, "victim");
    expect_frame(b, "ok");
    int a = dial(port);
    send_frame(a, "kill");
    expect_frame(a, "killed");
    expect_end(b);
    /* The killer goes on. */
    send_frame(a, "after");
    expect_frame(a, "after");
    close(a);
    close(b);
}

static void a_callback_closes_another_connection(const struct waiter *w)
{
    struct seen s;
    sockserv_server *server = embedded_server(NULL, &s);
    pid_t peer = spawn_peer(victim_peer, port_of(server));
    CHECK(run_loop(w, &s, two_closed, 20000) == SOCKSERV_OK);
    reap(peer, "close another");
    CHECK(s.victim_closes == 1);
    CHECK(s.victim_reason == SOCKSERV_OK);
    CHECK(s.reasons[SOCKSERV_ERR_CLOSED] == 1);
    if (s.victim) {
        /* The retained handle is safe and says closed. */
        EXPECT_RC(sockserv_conn_send(s.victim, (const uint8_t *)"x", 1), SOCKSERV_ERR_CLOSED);
        sockserv_conn_release(s.victim);
    }
    sockserv_server_free(server);
}

#define QUEUED 200

/* Written by the backlog peer once all its connections are in the
   listener's queue. */
static int queued_pipe[2];

static void queued_peer(int port)
{
    static int fds[QUEUED];
    for (int i = 0; i < QUEUED; i++)
        fds[i] = dial(port);
    REQUIRE(write(queued_pipe[1], "q", 1) == 1);
    /* Each is refused: closed without a byte. */
    int ended = 0;
    for (int i = QUEUED - 1; i >= 0; i--) {
        ended += expect_end(fds[i]);
        close(fds[i]);
    }
    CHECK(ended == QUEUED);
}

static bool refuse_all(void *ud, const char *peer)
{
    (void)peer;
    (*(int *)ud)++;
    return false;
}

static int all_refused(struct seen *s)
{
    uint64_t n = 0;
    REQUIRE_OK(sockserv_server_stat(s->server, SOCKSERV_STAT_REFUSED_BY_VERIFY, &n));
    return n == QUEUED;
}

/* The listener's queue holds more than one turn accepts, every one is
   refused (nothing registers, so no event follows) and nothing new
   arrives: the rest must be accepted on the next turns (timeout 0), not
   when the next client comes. The verify callback runs on this thread. */
static void accept_backlog_past_one_turn(const struct waiter *w)
{
    struct seen s;
    memset(&s, 0, sizeof s);
    int verified = 0;
    sockserv_server *server;
    REQUIRE_OK(sockserv_server_new("tcp://127.0.0.1:0", NULL, &server));
    REQUIRE_OK(sockserv_server_set_event_handlers(server, on_open, on_frame, on_close, &s));
    REQUIRE_OK(sockserv_server_set_verify(server, refuse_all, &verified));
    REQUIRE_OK(sockserv_server_start_embedded(server));
    s.server = server;
    REQUIRE(pipe(queued_pipe) == 0);
    pid_t peer = spawn_peer(queued_peer, port_of(server));
    char c;
    REQUIRE(read(queued_pipe[0], &c, 1) == 1);
    CHECK(run_loop(w, &s, all_refused, 20000) == SOCKSERV_OK);
    reap(peer, "accept backlog");
    CHECK(verified == QUEUED);
    CHECK(s.opened == 0);
    close(queued_pipe[0]);
    close(queued_pipe[1]);
    sockserv_server_free(server);
    printf("%s: %d queued connections refused, %d process calls\n", w->name, verified,
           s.process_calls);
}

#define SHUTDOWN_PEERS 5

static void shutdown_peer(int port)
{
    int fds[SHUTDOWN_PEERS];
    for (int i = 0; i < SHUTDOWN_PEERS; i++) {
        fds[i] = dial(port);
        send_frame(fds[i], "ping");
        expect_frame(fds[i], "ping");
    }
    send_frame(fds[0], "shutdown");
    for (int i = 0; i < SHUTDOWN_PEERS; i++) {
        expect_end(fds[i]);
        close(fds[i]);
    }
}

static void shutdown_from_a_callback(const struct waiter *w)
{
    struct seen s;
    sockserv_server *server = embedded_server(NULL, &s);
    pid_t peer = spawn_peer(shutdown_peer, port_of(server));
    EXPECT_RC(run_loop(w, &s, NULL, 20000), SOCKSERV_ERR_SHUTDOWN);
    reap(peer, "shutdown");
    CHECK(s.opened == SHUTDOWN_PEERS);
    CHECK(s.closed == SHUTDOWN_PEERS && s.reasons[SOCKSERV_ERR_SHUTDOWN] == SHUTDOWN_PEERS);
    EXPECT_RC(sockserv_server_process(server), SOCKSERV_ERR_SHUTDOWN);
    int ms;
    EXPECT_RC(sockserv_server_loop_timeout_ms(server, &ms), SOCKSERV_ERR_SHUTDOWN);
    sockserv_server_free(server);
    CHECK(s.closed == SHUTDOWN_PEERS); /* nothing closed twice at free */
}

static void full_peer(int port)
{
    /* max_connections 1, waiting: b waits in the kernel's queue until a
       closes. */
    int a = dial(port);
    send_frame(a, "a");
    expect_frame(a, "a");
    int b = dial(port);
    send_frame(b, "b");
    sleep_ms(200);
    close(a);
    expect_frame(b, "b");
    close(b);
}

static void when_full_waits_for_a_slot(const struct waiter *w)
{
    sockserv_config *config;
    REQUIRE_OK(sockserv_config_new(&config));
    REQUIRE_OK(sockserv_config_set_max_connections(config, 1));
    REQUIRE_OK(sockserv_config_set_when_full(config, SOCKSERV_WHEN_FULL_WAIT));
    struct seen s;
    sockserv_server *server = embedded_server(config, &s);
    sockserv_config_free(config);
    pid_t peer = spawn_peer(full_peer, port_of(server));
    CHECK(run_loop(w, &s, two_closed, 20000) == SOCKSERV_OK);
    reap(peer, "when full");
    CHECK(s.opened == 2 && s.frames == 2);
    sockserv_server_free(server);
}

static void refused_peer(int port)
{
    /* max_connections 1, refusing: b is accepted and closed at once. */
    int a = dial(port);
    send_frame(a, "a");
    expect_frame(a, "a");
    int b = dial(port);
    expect_end(b);
    close(b);
    send_frame(a, "a2");
    expect_frame(a, "a2");
    close(a);
}

static void when_full_refuses_and_counts(const struct waiter *w)
{
    sockserv_config *config;
    REQUIRE_OK(sockserv_config_new(&config));
    REQUIRE_OK(sockserv_config_set_max_connections(config, 1));
    REQUIRE_OK(sockserv_config_set_when_full(config, SOCKSERV_WHEN_FULL_REFUSE));
    struct seen s;
    sockserv_server *server = embedded_server(config, &s);
    sockserv_config_free(config);
    pid_t peer = spawn_peer(refused_peer, port_of(server));
    CHECK(run_loop(w, &s, one_closed, 20000) == SOCKSERV_OK);
    reap(peer, "when full refuses");
    uint64_t refused = 0;
    REQUIRE_OK(sockserv_server_stat(server, SOCKSERV_STAT_REFUSED_WHEN_FULL, &refused));
    CHECK(refused == 1);
    CHECK(s.opened == 1 && s.frames == 2);
    sockserv_server_free(server);
}

#define LIVE 3

static void lingering_peer(int port)
{
    int fds[LIVE];
    for (int i = 0; i < LIVE; i++) {
        fds[i] = dial(port);
        send_frame(fds[i], "ping");
        expect_frame(fds[i], "ping");
    }
    /* The server is freed with these open: each sees the end. */
    for (int i = 0; i < LIVE; i++) {
        expect_end(fds[i]);
        close(fds[i]);
    }
}

static int three_frames(struct seen *s) { return s->frames == LIVE; }

static void free_with_live_connections(const struct waiter *w)
{
    struct seen s;
    sockserv_server *server = embedded_server(NULL, &s);
    pid_t peer = spawn_peer(lingering_peer, port_of(server));
    CHECK(run_loop(w, &s, three_frames, 20000) == SOCKSERV_OK);
    /* The echoes are queued; free closes on this thread, on_close each. */
    sockserv_server_free(server);
    CHECK(s.closed == LIVE && s.reasons[SOCKSERV_ERR_SHUTDOWN] == LIVE);
    reap(peer, "free with live connections");
}

static int embed_main(const struct waiter *w)
{
    raise_fd_limit();
    baseline_threads = threads();
    echo_1000_connections(w);
    backpressure_with_a_peer_that_does_not_read(w);
    idle_timeout_with_no_traffic(w);
    handshake_timeout_with_no_traffic(w);
    a_callback_closes_another_connection(w);
    shutdown_from_a_callback(w);
    when_full_waits_for_a_slot(w);
    accept_backlog_past_one_turn(w);
    when_full_refuses_and_counts(w);
    free_with_live_connections(w);
    CHECK(threads() == baseline_threads);
    printf("%s: threads %d throughout\n", w->name, baseline_threads);
    printf("embed %s: %d checks, %d failed\n", w->name, checks, failures);
    return failures ? 1 : 0;
}

#endif
