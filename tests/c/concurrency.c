/*
 * Concurrency through the C API, for ThreadSanitizer (and AddressSanitizer):
 *
 * 1. Many threads send on shared connections at once (two threads per
 *    connection, each connection with its own reader thread), to a threaded
 *    and to an event-mode server: every echo comes back whole, and each
 *    sender's frames in order.
 * 2. A server shut down and freed while other threads are connecting and
 *    exchanging: every call returns a code (success, or refused, closed,
 *    shutdown...), none times out (a hang is a failure), nobody is served
 *    after the shutdown returned, nothing crashes.
 *
 * Run by tests/c_api/sanitizers.rs (under ASan + UBSan and TSan). Prints "concurrency: N checks, F failed"; exits 1
 * on any failure. Every loop is bounded in count, every wait in time.
 */
#define _POSIX_C_SOURCE 200809L

#include "sockserv.h"

#define CHECK_NAME "concurrency"
#include "check_threads.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CONNS 4
#define SENDERS_PER_CONN 2
#define FRAMES 300
#define RACERS 6
#define RACE_ROUNDS 40
#define TIMEOUT_MS 20000

static const uint8_t KEY[] = "concurrency test key";

/* ------------------------------------------------------------------ */
/* Servers                                                             */

static void echo_handler(void *userdata, sockserv_conn *conn)
{
    (void)userdata;
    const uint8_t *frame;
    size_t len;
    while (sockserv_conn_recv(conn, &frame, &len) == SOCKSERV_OK) {
        if (sockserv_conn_send(conn, frame, len) != SOCKSERV_OK)
            break;
    }
}

static void echo_frame(void *userdata, sockserv_conn *conn, const uint8_t *data, size_t len)
{
    (void)userdata;
    /* Queued without blocking; the queue limit is far above this test's. */
    sockserv_conn_send(conn, data, len);
}

static sockserv_config *keyed_config(void)
{
    sockserv_config *cfg;
    must(sockserv_config_new(&cfg), "config");
    must(sockserv_config_set_auth_key(cfg, KEY, sizeof KEY - 1), "key");
    must(sockserv_config_set_io_timeout_ms(cfg, TIMEOUT_MS), "io timeout");
    return cfg;
}

static sockserv_server *start_server(const sockserv_config *cfg, int event, char *addr, size_t addr_len)
{
    sockserv_server *srv;
    size_t n;
    must(sockserv_server_new("tcp://127.0.0.1:0", cfg, &srv), "server");
    if (event)
        must(sockserv_server_set_event_handlers(srv, NULL, echo_frame, NULL, NULL), "handlers");
    else
        must(sockserv_server_set_handler(srv, echo_handler, NULL), "handler");
    must(sockserv_server_local_addr(srv, addr, addr_len, &n), "local addr");
    must(sockserv_server_start(srv), "start");
    return srv;
}

/* ------------------------------------------------------------------ */
/* 1. Shared connections                                               */

/* A frame: sender id (1 byte), sequence number (4 bytes), then filler
 * bytes that all equal the sender id, so a torn or mixed frame shows. */
static size_t make_frame(uint8_t *buf, int sender, uint32_t seq)
{
    size_t len = 5 + (seq * 977u + (uint32_t)sender * 131u) % 3000u;
    buf[0] = (uint8_t)sender;
    buf[1] = (uint8_t)(seq >> 24);
    buf[2] = (uint8_t)(seq >> 16);
    buf[3] = (uint8_t)(seq >> 8);
    buf[4] = (uint8_t)seq;
    memset(buf + 5, sender, len - 5);
    return len;
}

struct sender {
    sockserv_conn *conn;
    int id;
    int sent;
};

static void *send_all(void *arg)
{
    struct sender *s = arg;
    uint8_t buf[3100];
    for (uint32_t seq = 0; seq < FRAMES; seq++) {
        size_t len = make_frame(buf, s->id, seq);
        if (sockserv_conn_send(s->conn, buf, len) != SOCKSERV_OK)
            break;
        s->sent++;
    }
    return NULL;
}

struct reader {
    sockserv_conn *conn;
    int first_sender;
    int received;
    int bad;
};

static void *read_all(void *arg)
{
    struct reader *r = arg;
    uint32_t next[SENDERS_PER_CONN] = {0};
    for (int i = 0; i < SENDERS_PER_CONN * FRAMES; i++) {
        const uint8_t *f;
        size_t len;
        if (sockserv_conn_recv(r->conn, &f, &len) != SOCKSERV_OK)
            break;
        int k = f[0] - r->first_sender;
        uint32_t seq = ((uint32_t)f[1] << 24) | ((uint32_t)f[2] << 16) | ((uint32_t)f[3] << 8) | f[4];
        uint8_t want[3100];
        int ok = len >= 5 && k >= 0 && k < SENDERS_PER_CONN && seq == next[k] &&
                 make_frame(want, f[0], seq) == len && memcmp(want, f, len) == 0;
        if (!ok) {
            r->bad++;
            continue;
        }
        next[k]++;
        r->received++;
    }
    return NULL;
}

static void shared_connections(int event)
{
    char addr[SOCKSERV_ADDRSTRLEN];
    sockserv_config *cfg = keyed_config();
    sockserv_server *srv = start_server(cfg, event, addr, sizeof addr);
    sockserv_conn *conns[CONNS];
    struct sender senders[CONNS * SENDERS_PER_CONN];
    struct reader readers[CONNS];
    pthread_t st[CONNS * SENDERS_PER_CONN], rt[CONNS];

    for (int c = 0; c < CONNS; c++) {
        must(sockserv_connect(addr, cfg, &conns[c]), "connect");
        readers[c] = (struct reader){conns[c], c * SENDERS_PER_CONN, 0, 0};
        pthread_create(&rt[c], NULL, read_all, &readers[c]);
    }
    for (int i = 0; i < CONNS * SENDERS_PER_CONN; i++) {
        senders[i] = (struct sender){conns[i / SENDERS_PER_CONN], i, 0};
        pthread_create(&st[i], NULL, send_all, &senders[i]);
    }
    for (int i = 0; i < CONNS * SENDERS_PER_CONN; i++) {
        pthread_join(st[i], NULL);
        CHECK(senders[i].sent == FRAMES);
    }
    for (int c = 0; c < CONNS; c++) {
        pthread_join(rt[c], NULL);
        CHECK(readers[c].bad == 0);
        CHECK(readers[c].received == SENDERS_PER_CONN * FRAMES);
        sockserv_conn_free(conns[c]);
    }
    uint64_t handshake_failures = 1;
    must(sockserv_server_stat(srv, SOCKSERV_STAT_HANDSHAKE_FAILURES, &handshake_failures), "stat");
    CHECK(handshake_failures == 0);
    sockserv_server_free(srv);
    sockserv_config_free(cfg);
    printf("concurrency: %d senders on %d shared connections, %s server: done\n",
           CONNS * SENDERS_PER_CONN, CONNS, event ? "event" : "threaded");
}

/* ------------------------------------------------------------------ */
/* 2. Shutdown racing with connects                                    */

struct racer {
    const char *addr;
    const sockserv_config *cfg;
    int ok, refused, other;
    int timed_out; /* a call that hung until its timeout: a failure */
    int late_ok;   /* served after the shutdown returned: a failure */
};

/* The race's two moments, under one lock (no sleeps to guess them): the
 * main thread shuts the server down once a racer is half-way through its
 * rounds, and every racer holds its last round until that shutdown has
 * returned, so each last round must be refused or cut; the server is
 * freed once half the racers are done with it, the others still running. */
static pthread_mutex_t race_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t race_cond = PTHREAD_COND_INITIALIZER;
static int race_halfway; /* racers past half their rounds */
static int race_stopped; /* sockserv_server_shutdown has returned */
static int race_last_done; /* racers that finished their last round */

/* Waits (at most 30 s) until *flag >= want; whether it got there. */
static int race_wait(const int *flag, int want)
{
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += 30;
    pthread_mutex_lock(&race_lock);
    int rc = 0;
    while (*flag < want && rc == 0)
        rc = pthread_cond_timedwait(&race_cond, &race_lock, &end);
    int got = *flag >= want;
    pthread_mutex_unlock(&race_lock);
    return got;
}

static void race_bump(int *flag)
{
    pthread_mutex_lock(&race_lock);
    (*flag)++;
    pthread_cond_broadcast(&race_cond);
    pthread_mutex_unlock(&race_lock);
}

static void *race(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        if (i == RACE_ROUNDS / 2)
            race_bump(&race_halfway);
        int last = i == RACE_ROUNDS - 1;
        if (last && !race_wait(&race_stopped, 1))
            r->other++; /* the shutdown never came */
        sockserv_conn *c;
        sockserv_result rc = sockserv_connect(r->addr, r->cfg, &c);
        if (rc == SOCKSERV_OK) {
            const uint8_t *f;
            size_t len;
            rc = sockserv_conn_send(c, (const uint8_t *)"race", 4);
            if (rc == SOCKSERV_OK)
                rc = sockserv_conn_recv(c, &f, &len);
            if (rc == SOCKSERV_OK && (len != 4 || memcmp(f, "race", 4) != 0))
                rc = SOCKSERV_ERR_PROTOCOL; /* counted below as "other" */
            sockserv_conn_free(c);
        }
        switch (rc) {
        case SOCKSERV_OK:
            r->ok++;
            if (last)
                r->late_ok++;
            break;
        case SOCKSERV_ERR_CONNECTION_REFUSED: r->refused++; break;
        /* The server went away at some point of the exchange. */
        case SOCKSERV_ERR_CLOSED:
        case SOCKSERV_ERR_SHUTDOWN:
        case SOCKSERV_ERR_TRUNCATED_FRAME:
        case SOCKSERV_ERR_BROKEN:
        case SOCKSERV_ERR_IO:
            r->refused++;
            break;
        /* Not an ending: the server left the call hanging. */
        case SOCKSERV_ERR_TIMED_OUT: r->timed_out++; break;
        default: r->other++; break;
        }
        if (last)
            race_bump(&race_last_done);
    }
    return NULL;
}

static void shutdown_races_connects(int event)
{
    char addr[SOCKSERV_ADDRSTRLEN];
    sockserv_config *cfg = keyed_config();
    must(sockserv_config_set_handshake_timeout_ms(cfg, 2000), "handshake timeout");
    must(sockserv_config_set_io_timeout_ms(cfg, 2000), "io timeout");
    sockserv_server *srv = start_server(cfg, event, addr, sizeof addr);
    struct racer racers[RACERS];
    pthread_t t[RACERS];
    race_halfway = 0;
    race_stopped = 0;
    race_last_done = 0;
    for (int i = 0; i < RACERS; i++) {
        racers[i] = (struct racer){addr, cfg, 0, 0, 0, 0, 0};
        pthread_create(&t[i], NULL, race, &racers[i]);
    }
    /* Once a racer is half-way (the others are connecting all the while),
     * stop accepting; once half the racers made their last attempt against
     * the stopped (not yet freed) server, free it (closing live
     * connections, joining its threads) while the rest still run. */
    CHECK(race_wait(&race_halfway, 1));
    CHECK(sockserv_server_shutdown(srv) == SOCKSERV_OK);
    race_bump(&race_stopped);
    CHECK(race_wait(&race_last_done, RACERS / 2));
    sockserv_server_free(srv);
    int ok = 0, refused = 0, other = 0, timed_out = 0, late_ok = 0;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(t[i], NULL);
        ok += racers[i].ok;
        refused += racers[i].refused;
        other += racers[i].other;
        timed_out += racers[i].timed_out;
        late_ok += racers[i].late_ok;
    }
    CHECK(other == 0);
    CHECK(timed_out == 0); /* nothing hung */
    CHECK(late_ok == 0);   /* nobody was served after the shutdown */
    CHECK(ok + refused == RACERS * RACE_ROUNDS);
    CHECK(refused >= RACERS); /* at least every racer's last round */
    sockserv_config_free(cfg);
    printf("concurrency: shutdown raced %d connects (%s): %d served, %d refused or cut, "
           "%d timed out, %d served after the shutdown, %d other\n",
           RACERS * RACE_ROUNDS, event ? "event" : "threaded", ok, refused, timed_out,
           late_ok, other);
}

int main(void)
{
    shared_connections(0);
    shared_connections(1);
    shutdown_races_connects(0);
    shutdown_races_connects(1);
    printf("concurrency: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
