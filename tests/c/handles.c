/*
 * Connection handles that outlive their connection (issue 10, finding 7):
 * sockserv_conn_retain / sockserv_conn_release.
 *
 * 1. The old use-after-free pattern: a worker thread keeps the handle an
 *    event callback got and sends after on_close returned. With a retained
 *    handle that send returns SOCKSERV_ERR_CLOSED (before, the handle was
 *    freed when on_close returned: a use-after-free under ASan). The same
 *    for a threaded handler's handle after the handler returned (and the
 *    peer sees the end although the handle is still held), and for a
 *    client connection retained past sockserv_conn_free.
 * 2. Stress: 8 threads send (and read options, close) through retained
 *    handles of event-mode connections that clients close at random;
 *    every call returns OK, SOCKSERV_ERR_CLOSED or SOCKSERV_ERR_WOULD_BLOCK,
 *    never crashes (0 ASan reports), and every reference is given back.
 *
 * Run by tests/c_api (plain, and under ASan + UBSan). Prints
 * "handles: N checks, F failed"; exits 1 on any failure. Every loop is
 * bounded in count, every wait in time.
 */
#define _POSIX_C_SOURCE 200809L

#include "sockserv.h"

#define CHECK_NAME "handles"
#include "check_threads.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SENDERS 8
#define SLOTS 16
#define CONNECTIONS 300
#define MAX_SENDS_PER_THREAD 200000
#define STRESS_LIMIT_MS 20000
#define WAIT_MS 10000

static const uint8_t KEY[] = "handles test key";

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static sockserv_config *keyed_config(void)
{
    sockserv_config *cfg;
    must(sockserv_config_new(&cfg), "config");
    must(sockserv_config_set_auth_key(cfg, KEY, sizeof KEY - 1), "key");
    must(sockserv_config_set_io_timeout_ms(cfg, WAIT_MS), "io timeout");
    return cfg;
}

static sockserv_server *new_server(const sockserv_config *cfg, char *addr, size_t len)
{
    sockserv_server *srv;
    size_t n;
    must(sockserv_server_new("tcp://127.0.0.1:0", cfg, &srv), "server");
    must(sockserv_server_local_addr(srv, addr, len, &n), "local addr");
    return srv;
}

/* ------------------------------------------------------------------ */
/* 1. The old use-after-free pattern                                   */

static pthread_mutex_t late_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t late_cond = PTHREAD_COND_INITIALIZER;
static sockserv_conn *late_handle; /* retained in on_frame / the handler */
static int late_closed;            /* on_close (or the handler) returned */

static void late_frame(void *userdata, sockserv_conn *conn, const uint8_t *data, size_t len)
{
    (void)userdata;
    (void)data;
    (void)len;
    /* Hand the work to a thread of ours, which replies later. */
    CHECK(sockserv_conn_retain(conn) == SOCKSERV_OK);
    pthread_mutex_lock(&late_lock);
    late_handle = conn;
    pthread_cond_broadcast(&late_cond);
    pthread_mutex_unlock(&late_lock);
}

static void late_close(void *userdata, sockserv_conn *conn, sockserv_result reason)
{
    (void)userdata;
    (void)reason;
    /* The connection is closed already: sends fail during on_close too. */
    CHECK(sockserv_conn_send(conn, (const uint8_t *)"x", 1) == SOCKSERV_ERR_CLOSED);
    pthread_mutex_lock(&late_lock);
    late_closed = 1;
    pthread_cond_broadcast(&late_cond);
    pthread_mutex_unlock(&late_lock);
}

static void late_handler(void *userdata, sockserv_conn *conn)
{
    (void)userdata;
    const uint8_t *frame;
    size_t len;
    if (sockserv_conn_recv(conn, &frame, &len) != SOCKSERV_OK)
        return;
    late_frame(NULL, conn, frame, len);
    /* Returning ends the connection, although the worker holds it. */
}

/* Waits (bounded) until `*flag` is set; whether it was. */
static int late_wait(const int *flag)
{
    long end = now_ms() + WAIT_MS;
    pthread_mutex_lock(&late_lock);
    while (!*flag && now_ms() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&late_cond, &late_lock, &ts);
    }
    int set = *flag;
    pthread_mutex_unlock(&late_lock);
    return set;
}

/* The worker: sends once the connection has ended, from its own thread. */
static void *late_worker(void *arg)
{
    sockserv_conn *conn = arg;
    sockserv_result *rc = malloc(sizeof *rc);
    *rc = sockserv_conn_send(conn, (const uint8_t *)"too late", 8);
    return rc;
}

static void send_after_close(int event)
{
    char addr[SOCKSERV_ADDRSTRLEN];
    sockserv_config *cfg = keyed_config();
    sockserv_server *srv = new_server(cfg, addr, sizeof addr);
    if (event)
        must(sockserv_server_set_event_handlers(srv, NULL, late_frame, late_close, NULL), "handlers");
    else
        must(sockserv_server_set_handler(srv, late_handler, NULL), "handler");
    must(sockserv_server_start(srv), "start");
    late_handle = NULL;
    late_closed = 0;

    sockserv_conn *client;
    must(sockserv_connect(addr, cfg, &client), "connect");
    must(sockserv_conn_send(client, (const uint8_t *)"work", 4), "send work");
    pthread_mutex_lock(&late_lock);
    long end = now_ms() + WAIT_MS;
    while (!late_handle && now_ms() < end) {
        pthread_mutex_unlock(&late_lock);
        sleep_us(1000);
        pthread_mutex_lock(&late_lock);
    }
    sockserv_conn *held = late_handle;
    pthread_mutex_unlock(&late_lock);
    CHECK(held != NULL);
    if (!held) {
        sockserv_conn_free(client);
        sockserv_server_free(srv);
        sockserv_config_free(cfg);
        return;
    }
    if (event) {
        /* Live: the worker's reply reaches the client. */
        CHECK(sockserv_conn_send(held, (const uint8_t *)"reply", 5) == SOCKSERV_OK);
        const uint8_t *frame;
        size_t len;
        CHECK(sockserv_conn_recv(client, &frame, &len) == SOCKSERV_OK && len == 5);
        /* The peer leaves; on_close runs and returns. */
        sockserv_conn_free(client);
        CHECK(late_wait(&late_closed));
    } else {
        /* The handler returned: the client sees the end although the
         * worker still holds the handle. */
        const uint8_t *frame;
        size_t len;
        CHECK(sockserv_conn_recv(client, &frame, &len) == SOCKSERV_ERR_CLOSED);
        sockserv_conn_free(client);
    }
    /* The old use-after-free: a send from a worker thread after the end. */
    pthread_t worker;
    void *result = NULL;
    CHECK(pthread_create(&worker, NULL, late_worker, held) == 0);
    pthread_join(worker, &result);
    CHECK(result && *(sockserv_result *)result == SOCKSERV_ERR_CLOSED);
    free(result);
    /* Every call that touches the connection says so; its addresses stay. */
    int fd = -1;
    int64_t value = 0;
    bool on = false;
    char peer[SOCKSERV_ADDRSTRLEN];
    size_t n = 0;
    CHECK(sockserv_conn_fd(held, &fd) == SOCKSERV_ERR_CLOSED && fd == -1);
    CHECK(sockserv_conn_close(held) == SOCKSERV_ERR_CLOSED);
    CHECK(sockserv_conn_get_option(held, SOCKSERV_OPT_RCVBUF, &value) == SOCKSERV_ERR_CLOSED);
    CHECK(sockserv_conn_set_nodelay(held, true) == SOCKSERV_ERR_CLOSED);
    CHECK(sockserv_conn_get_nodelay(held, &on) == SOCKSERV_ERR_CLOSED);
    CHECK(sockserv_conn_peer_addr(held, peer, sizeof peer, &n) == SOCKSERV_OK &&
          strncmp(peer, "tcp://127.0.0.1:", 16) == 0);
    /* The server goes first: the handle is still valid memory. */
    sockserv_server_free(srv);
    CHECK(sockserv_conn_send(held, (const uint8_t *)"after free", 10) == SOCKSERV_ERR_CLOSED);
    sockserv_conn_release(held);
    sockserv_config_free(cfg);
}

/* A client connection retained past sockserv_conn_free. */
static void client_retained_past_free(void)
{
    char addr[SOCKSERV_ADDRSTRLEN];
    sockserv_server *srv = new_server(NULL, addr, sizeof addr);
    must(sockserv_server_set_handler(srv, late_handler, NULL), "handler");
    must(sockserv_server_start(srv), "start");
    pthread_mutex_lock(&late_lock);
    late_handle = NULL; /* the last test's, released */
    pthread_mutex_unlock(&late_lock);
    sockserv_conn *client;
    must(sockserv_connect(addr, NULL, &client), "connect");
    CHECK(sockserv_conn_retain(client) == SOCKSERV_OK);
    CHECK(sockserv_conn_retain(client) == SOCKSERV_OK);
    sockserv_conn_release(client); /* two references left: ours and the free's */
    sockserv_conn_free(client);
    CHECK(sockserv_conn_send(client, (const uint8_t *)"x", 1) == SOCKSERV_ERR_CLOSED);
    const uint8_t *frame;
    size_t len;
    CHECK(sockserv_conn_recv(client, &frame, &len) == SOCKSERV_ERR_CLOSED);
    sockserv_conn_release(client);
    CHECK(sockserv_conn_retain(NULL) == SOCKSERV_ERR_NULL_PARAMETER);
    sockserv_conn_release(NULL);
    sockserv_server_free(srv);
    pthread_mutex_lock(&late_lock);
    sockserv_conn *held = late_handle;
    late_handle = NULL;
    pthread_mutex_unlock(&late_lock);
    /* The client sent nothing, so the handler retained nothing. */
    CHECK(held == NULL);
}

/* ------------------------------------------------------------------ */
/* 2. Stress: 8 senders, connections closing at random                 */

static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;
static sockserv_conn *slots[SLOTS]; /* each holds one reference */
static unsigned next_slot;
static int opened, closed_count;
static volatile int stress_done;
static long sends_ok, sends_closed, sends_busy;

static void stress_open(void *userdata, sockserv_conn *conn)
{
    (void)userdata;
    CHECK(sockserv_conn_retain(conn) == SOCKSERV_OK);
    pthread_mutex_lock(&slot_lock);
    unsigned i = next_slot++ % SLOTS;
    sockserv_conn *old = slots[i];
    slots[i] = conn;
    opened++;
    pthread_mutex_unlock(&slot_lock);
    sockserv_conn_release(old); /* may be live or closed; NULL is fine */
}

static void stress_close(void *userdata, sockserv_conn *conn, sockserv_result reason)
{
    (void)userdata;
    (void)conn;
    (void)reason;
    pthread_mutex_lock(&slot_lock);
    closed_count++;
    pthread_mutex_unlock(&slot_lock);
}

static void *stress_sender(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 1;
    uint8_t frame[64];
    memset(frame, (int)(uintptr_t)arg, sizeof frame);
    long ok = 0, closed = 0, busy = 0;
    long end = now_ms() + STRESS_LIMIT_MS;
    for (int i = 0; i < MAX_SENDS_PER_THREAD && !stress_done && now_ms() < end; i++) {
        unsigned r = (unsigned)rand_r(&seed);
        pthread_mutex_lock(&slot_lock);
        sockserv_conn *conn = slots[r % SLOTS];
        if (conn)
            sockserv_conn_retain(conn); /* ours, beyond the slot's */
        pthread_mutex_unlock(&slot_lock);
        if (!conn) {
            sleep_us(100);
            continue;
        }
        sockserv_result rc;
        int fd;
        switch ((r >> 8) % 16) {
        case 0:
            rc = sockserv_conn_fd(conn, &fd);
            break;
        case 1:
            rc = sockserv_conn_set_nodelay(conn, true);
            break;
        case 2:
            rc = (r >> 12) % 8 == 0 ? sockserv_conn_close(conn) : SOCKSERV_OK;
            break;
        default:
            rc = sockserv_conn_send(conn, frame, sizeof frame);
        }
        if (rc == SOCKSERV_OK)
            ok++;
        else if (rc == SOCKSERV_ERR_CLOSED) {
            closed++;
            sleep_us(20); /* spread the sends over the connections' lives */
        }
        else if (rc == SOCKSERV_ERR_WOULD_BLOCK)
            busy++;
        else
            CHECK(!"an unexpected code from a call on a retained handle");
        sockserv_conn_release(conn);
    }
    pthread_mutex_lock(&slot_lock);
    sends_ok += ok;
    sends_closed += closed;
    sends_busy += busy;
    pthread_mutex_unlock(&slot_lock);
    return NULL;
}

static void stress(void)
{
    char addr[SOCKSERV_ADDRSTRLEN];
    sockserv_config *cfg;
    must(sockserv_config_new(&cfg), "config");
    must(sockserv_config_set_io_threads(cfg, 2), "io threads");
    must(sockserv_config_set_io_timeout_ms(cfg, WAIT_MS), "io timeout");
    sockserv_server *srv = new_server(cfg, addr, sizeof addr);
    must(sockserv_server_set_event_handlers(srv, stress_open, NULL, stress_close, NULL), "handlers");
    must(sockserv_server_start(srv), "start");

    pthread_t senders[SENDERS];
    for (uintptr_t t = 0; t < SENDERS; t++)
        CHECK(pthread_create(&senders[t], NULL, stress_sender, (void *)(t + 1)) == 0);
    unsigned seed = 12345;
    long end = now_ms() + STRESS_LIMIT_MS;
    int made = 0;
    for (int i = 0; i < CONNECTIONS && now_ms() < end; i++) {
        sockserv_conn *client;
        if (sockserv_connect(addr, cfg, &client) != SOCKSERV_OK)
            continue;
        made++;
        sleep_us((long)(rand_r(&seed) % 3000)); /* open for 0-3 ms */
        sockserv_conn_free(client);
    }
    /* Every connection the server opened is closed (bounded wait). */
    long wait_end = now_ms() + WAIT_MS;
    for (;;) {
        pthread_mutex_lock(&slot_lock);
        int done = closed_count == opened && opened == made;
        pthread_mutex_unlock(&slot_lock);
        if (done || now_ms() > wait_end)
            break;
        sleep_us(1000);
    }
    /* A little more sending on handles that are all closed now. */
    sleep_us(20000);
    stress_done = 1;
    for (int t = 0; t < SENDERS; t++)
        pthread_join(senders[t], NULL);
    pthread_mutex_lock(&slot_lock);
    CHECK(made > CONNECTIONS / 2);
    CHECK(opened == made);
    CHECK(closed_count == opened);
    pthread_mutex_unlock(&slot_lock);
    CHECK(sends_ok > 0);
    CHECK(sends_closed > 0);
    printf("handles: stress: %d connections, %ld calls OK, %ld SOCKSERV_ERR_CLOSED, %ld WOULD_BLOCK\n",
           made, sends_ok, sends_closed, sends_busy);
    /* The server may go before the last references do. */
    sockserv_server_free(srv);
    for (int i = 0; i < SLOTS; i++) {
        if (slots[i])
            CHECK(sockserv_conn_send(slots[i], (const uint8_t *)"x", 1) == SOCKSERV_ERR_CLOSED);
        sockserv_conn_release(slots[i]);
        slots[i] = NULL;
    }
    sockserv_config_free(cfg);
}

int main(void)
{
    send_after_close(1);
    send_after_close(0);
    client_retained_past_free();
    stress();
    printf("handles: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
