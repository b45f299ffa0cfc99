/* The load generator's scenarios for the baselines that speak their own
 * protocol (nng tls+tcp://, ZeroMQ CURVE): the same options, checks and
 * JSON line as bench/loadgen, over a small transport interface that each
 * client fills in (nng_client.c, zmq_client.c).
 *
 * One thread per connection (nng and ZeroMQ do their I/O on threads of
 * their own anyway): connect, a ping echo, then `depth` frames in flight,
 * one sent for each echo received and checked. Frame `seq` of connection
 * `conn` carries seq (8 bytes LE) and conn (4 bytes LE) over a window of a
 * fixed pseudo-random table chosen by (conn, seq), so a lost, duplicated,
 * reordered, corrupted or cross-wired echo fails the check. With --churn,
 * each thread instead opens a connection, echoes one ping and closes it,
 * over and over: connections/s (reported as frames_per_s).
 *
 * Output: one JSON line on stdout ({"ok":true,...} or {"ok":false,
 * "error":...}), one human line on stderr; exit 1 on any failure. */
#ifndef BENCH_CLIENT_H
#define BENCH_CLIENT_H

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct copts {
    const char *addr;   /* host:port */
    int conns, depth;
    size_t size;
    double warmup, duration, setup_timeout, drain_timeout;
    int churn;
    int rss_pid;
    const char *ca;     /* --tls-ca: trust anchors (nng) */
    const char *curve;  /* --curve: the server's public key, Z85 (ZeroMQ) */
};

/* What a client provides. open: a connected handle or NULL (with *err
 * set); send: 0 or -1; recv: the next message (0) or -1, its bytes valid
 * until release(msg); close: closes it. */
struct transport {
    const char *name;
    int (*init)(const struct copts *o, char *err, size_t errlen);
    void *(*open)(const struct copts *o, int id, char *err, size_t errlen);
    int (*send)(void *h, const uint8_t *buf, size_t len, char *err, size_t errlen);
    int (*recv)(void *h, const uint8_t **buf, size_t *len, void **msg, char *err, size_t errlen);
    void (*release)(void *msg);
    void (*close)(void *h);
};

static void json_fail(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '"' || *p == '\\' || *p == '\n') *p = ' ';
    printf("{\"ok\":false,\"error\":\"%s\"}\n", msg);
    fflush(stdout);
    fprintf(stderr, "client: error: %s\n", msg);
    _exit(1);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ---- the pattern ---- */

static uint8_t *pattern_table; /* size + 256 bytes */

static void pattern_init(size_t size) {
    uint64_t x = 0x2545F4914F6CDD1Dull;
    pattern_table = malloc(size + 256);
    if (!pattern_table) json_fail("out of memory");
    for (size_t i = 0; i < size + 256; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pattern_table[i] = (uint8_t)(x >> 32);
    }
}

static size_t pattern_offset(uint32_t conn, uint64_t seq) {
    return (((seq * 0x9E3779B97F4A7C15ull) >> 56) ^ conn) & 0xff;
}

/* Frame (conn, seq) into buf (size bytes). */
static void pattern_fill(uint8_t *buf, size_t size, uint32_t conn, uint64_t seq) {
    uint8_t stamp[12];
    size_t n = size < 12 ? size : 12;
    memcpy(buf, pattern_table + pattern_offset(conn, seq), size);
    for (int i = 0; i < 8; i++) stamp[i] = (uint8_t)(seq >> (8 * i));
    for (int i = 0; i < 4; i++) stamp[8 + i] = (uint8_t)(conn >> (8 * i));
    memcpy(buf, stamp, n);
}

/* 0 if buf is frame (conn, seq); else the offset of the first wrong byte + 1. */
static size_t pattern_check(const uint8_t *buf, size_t len, size_t size, uint32_t conn, uint64_t seq) {
    uint8_t head[12];
    size_t n = size < 12 ? size : 12;
    const uint8_t *want = pattern_table + pattern_offset(conn, seq);
    if (len != size) return 1;
    for (int i = 0; i < 8; i++) head[i] = (uint8_t)(seq >> (8 * i));
    for (int i = 0; i < 4; i++) head[8 + i] = (uint8_t)(conn >> (8 * i));
    for (size_t i = 0; i < n; i++)
        if (buf[i] != head[i]) return i + 1;
    if (memcmp(buf + n, want + n, size - n) != 0) {
        for (size_t i = n; i < size; i++)
            if (buf[i] != want[i]) return i + 1;
    }
    return 0;
}

/* ---- round-trip times: a log-linear histogram (64 steps per octave) ---- */

#define HIST_BUCKETS (64 * 40)
struct hist {
    uint64_t n[HIST_BUCKETS];
    uint64_t count, max;
};

static int hist_bucket(uint64_t v) {
    int e;
    if (v < 64) return (int)v;
    e = 63 - __builtin_clzll(v); /* >= 6 */
    return (e - 5) * 64 + (int)((v >> (e - 6)) & 63);
}

static uint64_t hist_value(int b) {
    int e;
    if (b < 64) return (uint64_t)b;
    e = b / 64 + 5;
    return ((uint64_t)(64 + b % 64) << (e - 6)) + ((1ull << (e - 6)) >> 1);
}

static void hist_add(struct hist *h, uint64_t v) {
    int b = hist_bucket(v);
    if (b >= HIST_BUCKETS) b = HIST_BUCKETS - 1;
    h->n[b]++;
    h->count++;
    if (v > h->max) h->max = v;
}

static void hist_merge(struct hist *into, const struct hist *h) {
    for (int i = 0; i < HIST_BUCKETS; i++) into->n[i] += h->n[i];
    into->count += h->count;
    if (h->max > into->max) into->max = h->max;
}

static double hist_quantile_us(const struct hist *h, double q) {
    uint64_t want = (uint64_t)(q * (double)h->count), seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->n[i];
        if (seen > want) return (double)hist_value(i) / 1000.0;
    }
    return (double)h->max / 1000.0;
}

/* ---- the run ---- */

static const struct transport *T;
static struct copts O;
static atomic_int sending = 1, measuring = 0;
static atomic_int ready_count = 0;
static pthread_barrier_t go;

struct worker {
    pthread_t tid;
    int id;
    struct hist hist;
    uint64_t frames, all_frames, bytes;
    uint64_t *sent_at; /* ring of depth send times */
    uint8_t *buf;
};

static void ping(void *h, int id, uint8_t *buf, char *err, size_t errlen) {
    const uint8_t *r;
    size_t n;
    void *msg;
    memcpy(buf, "ping", 4);
    memcpy(buf + 4, &id, 4);
    if (T->send(h, buf, 8, err, errlen)) json_fail("connection %d: ping: %s", id, err);
    if (T->recv(h, &r, &n, &msg, err, errlen)) json_fail("connection %d: ping echo: %s", id, err);
    if (n != 8 || memcmp(r, buf, 8)) json_fail("connection %d: the ping came back wrong (%zu bytes)", id, n);
    T->release(msg);
}

static void *steady(void *arg) {
    struct worker *w = arg;
    char err[256] = "";
    uint64_t send_seq = 0, recv_seq = 0;
    void *h = T->open(&O, w->id, err, sizeof err);
    if (!h) json_fail("connection %d: %s", w->id, err);
    ping(h, w->id, w->buf, err, sizeof err);
    atomic_fetch_add(&ready_count, 1);
    pthread_barrier_wait(&go);
    while (send_seq < (uint64_t)O.depth) {
        pattern_fill(w->buf, O.size, (uint32_t)w->id, send_seq);
        w->sent_at[send_seq % (uint64_t)O.depth] = now_ns();
        if (T->send(h, w->buf, O.size, err, sizeof err)) json_fail("connection %d: send: %s", w->id, err);
        send_seq++;
    }
    while (recv_seq < send_seq) {
        const uint8_t *r;
        size_t n, bad;
        void *msg;
        uint64_t t;
        if (T->recv(h, &r, &n, &msg, err, sizeof err))
            json_fail("connection %d (%llu frames in flight): receive: %s", w->id,
                      (unsigned long long)(send_seq - recv_seq), err);
        bad = pattern_check(r, n, O.size, (uint32_t)w->id, recv_seq);
        if (bad)
            json_fail("connection %d: the echo of frame %llu differs at byte %zu (%zu bytes)", w->id,
                      (unsigned long long)recv_seq, bad - 1, n);
        T->release(msg);
        t = now_ns();
        w->all_frames++;
        if (atomic_load_explicit(&measuring, memory_order_relaxed)) {
            w->frames++;
            w->bytes += O.size;
            hist_add(&w->hist, t - w->sent_at[recv_seq % (uint64_t)O.depth]);
        }
        recv_seq++;
        if (atomic_load_explicit(&sending, memory_order_relaxed)) {
            pattern_fill(w->buf, O.size, (uint32_t)w->id, send_seq);
            w->sent_at[send_seq % (uint64_t)O.depth] = now_ns();
            if (T->send(h, w->buf, O.size, err, sizeof err)) json_fail("connection %d: send: %s", w->id, err);
            send_seq++;
        }
    }
    T->close(h);
    return NULL;
}

static void *churn(void *arg) {
    struct worker *w = arg;
    char err[256] = "";
    int id = w->id;
    atomic_fetch_add(&ready_count, 1);
    pthread_barrier_wait(&go);
    while (atomic_load_explicit(&sending, memory_order_relaxed)) {
        uint64_t t0 = now_ns();
        void *h = T->open(&O, id, err, sizeof err);
        if (!h) json_fail("connection %d: %s", id, err);
        ping(h, id, w->buf, err, sizeof err);
        T->close(h);
        w->all_frames++;
        if (atomic_load_explicit(&measuring, memory_order_relaxed)) {
            w->frames++;
            hist_add(&w->hist, now_ns() - t0);
        }
        id += O.conns;
    }
    return NULL;
}

static long rss_kb(int pid) {
    char path[64], line[256];
    long kb = -1;
    FILE *f;
    if (pid <= 0) return -1;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    if (!(f = fopen(path, "r"))) return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    fclose(f);
    return kb;
}

static void print_kb(const char *name, long kb) {
    if (kb < 0)
        printf(",\"%s\":null", name);
    else
        printf(",\"%s\":%ld", name, kb);
}

static size_t parse_size(const char *s) {
    char *end;
    size_t n = strtoull(s, &end, 10);
    if (*end == 'K' || *end == 'k') n *= 1024;
    if (*end == 'M') n *= 1024 * 1024;
    return n;
}

static void usage(void) {
    fprintf(stderr, "usage: client --addr HOST:PORT [-c N] [-d D] [-s S] [--warmup S] [--duration S] [--churn]\n"
                    "       [--tls-ca FILE] [--curve SERVER_PUBLIC_Z85] [--rss-pid PID]\n"
                    "       (loadgen's --idle 0, --threads, --key and --setup-timeout are accepted)\n");
    exit(2);
}

static int client_main(int argc, char **argv, const struct transport *t) {
    char err[256] = "";
    struct worker *ws;
    struct hist all;
    double t_setup, start, m_start, m_stop, limit;
    uint64_t frames = 0, all_frames = 0, bytes = 0;
    long rss_before, rss_connected, rss_end;
    T = t;
    memset(&O, 0, sizeof O);
    O.conns = 1, O.depth = 1, O.size = 64, O.warmup = 1, O.duration = 5, O.setup_timeout = 60;
    O.drain_timeout = 10;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--churn")) {
            O.churn = 1;
            continue;
        }
        if (!v) usage();
        i++;
        if (!strcmp(f, "--addr")) O.addr = strncmp(v, "tcp://", 6) ? v : v + 6;
        else if (!strcmp(f, "-c") || !strcmp(f, "--connections")) O.conns = atoi(v);
        else if (!strcmp(f, "-d") || !strcmp(f, "--depth")) O.depth = atoi(v);
        else if (!strcmp(f, "-s") || !strcmp(f, "--size")) O.size = parse_size(v);
        else if (!strcmp(f, "--warmup")) O.warmup = atof(v);
        else if (!strcmp(f, "--duration")) O.duration = atof(v);
        else if (!strcmp(f, "--setup-timeout")) O.setup_timeout = atof(v);
        else if (!strcmp(f, "--drain-timeout")) O.drain_timeout = atof(v);
        else if (!strcmp(f, "--rss-pid")) O.rss_pid = atoi(v);
        else if (!strcmp(f, "--tls-ca")) O.ca = v;
        else if (!strcmp(f, "--curve")) O.curve = v;
        else if (!strcmp(f, "--idle")) {
            if (atoi(v) != 0) json_fail("%s holds no idle connections (--idle %s)", t->name, v);
        } else if (!strcmp(f, "--threads") || !strcmp(f, "--key")) {
            /* one thread per connection; no HMAC handshake in this protocol */
        } else
            usage();
    }
    if (!O.addr || O.conns < 1 || O.depth < 1 || O.size < 8) usage();
    pattern_init(O.size);
    if (t->init && t->init(&O, err, sizeof err)) json_fail("%s", err);
    ws = calloc((size_t)O.conns, sizeof *ws);
    if (!ws) json_fail("out of memory");
    pthread_barrier_init(&go, NULL, (unsigned)O.conns + 1);
    rss_before = rss_kb(O.rss_pid);
    t_setup = now_s();
    for (int i = 0; i < O.conns; i++) {
        ws[i].id = i;
        ws[i].sent_at = calloc((size_t)O.depth, sizeof(uint64_t));
        ws[i].buf = malloc(O.size < 8 ? 8 : O.size);
        if (!ws[i].sent_at || !ws[i].buf) json_fail("out of memory");
        if (pthread_create(&ws[i].tid, NULL, O.churn ? churn : steady, &ws[i])) json_fail("pthread_create");
    }
    while (atomic_load(&ready_count) < O.conns) {
        if (now_s() - t_setup > O.setup_timeout)
            json_fail("only %d of %d connections were set up within %.0f s", atomic_load(&ready_count), O.conns,
                      O.setup_timeout);
        usleep(1000);
    }
    t_setup = now_s() - t_setup;
    usleep(300000); /* the server finishes with the last handshakes */
    rss_connected = rss_kb(O.rss_pid);
    pthread_barrier_wait(&go);
    start = now_s();
    usleep((useconds_t)(O.warmup * 1e6));
    m_start = now_s();
    atomic_store(&measuring, 1);
    usleep((useconds_t)(O.duration * 1e6));
    atomic_store(&measuring, 0);
    m_stop = now_s();
    atomic_store(&sending, 0);
    /* Every frame sent must come back: a thread that waits too long for
     * its echoes fails the run (the receive timeout is drain_timeout). */
    limit = m_stop + O.drain_timeout + 5;
    for (int i = 0; i < O.conns; i++) {
        struct timespec ts;
        double left = limit - now_s();
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)(left > 0 ? left : 0) + 1;
        if (pthread_timedjoin_np(ws[i].tid, NULL, &ts))
            json_fail("connection %d did not finish within %.0f s of the end", i, O.drain_timeout + 5);
    }
    rss_end = rss_kb(O.rss_pid);
    memset(&all, 0, sizeof all);
    for (int i = 0; i < O.conns; i++) {
        hist_merge(&all, &ws[i].hist);
        frames += ws[i].frames;
        all_frames += ws[i].all_frames;
        bytes += ws[i].bytes;
    }
    {
        double secs = m_stop - m_start, fps = (double)frames / secs;
        (void)start;
        printf("{\"ok\":true,\"client\":\"%s\",\"addr\":\"%s\",\"connections\":%d,\"idle\":0,\"depth\":%d,"
               "\"size\":%zu,\"churn\":%s,\"duration_s\":%.3f,\"setup_s\":%.3f,\"all_frames\":%llu,"
               "\"frames\":%llu,\"bytes\":%llu,\"frames_per_s\":%.0f,\"mb_per_s\":%.2f,\"p50_us\":%.1f,"
               "\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f",
               t->name, O.addr, O.conns, O.depth, O.size, O.churn ? "true" : "false", secs, t_setup,
               (unsigned long long)all_frames, (unsigned long long)frames, (unsigned long long)bytes, fps,
               (double)bytes / secs / 1e6, hist_quantile_us(&all, 0.5), hist_quantile_us(&all, 0.99),
               hist_quantile_us(&all, 0.999), (double)all.max / 1000.0);
        print_kb("rss_before_kb", rss_before);
        print_kb("rss_connected_kb", rss_connected);
        print_kb("rss_end_kb", rss_end);
        printf("}\n");
        fflush(stdout);
        fprintf(stderr, "%s client: %d conns x depth %d x %zu B%s: %.0f %s/s, %.1f MB/s, p50 %.1f us, p99 %.1f us\n",
                t->name, O.conns, O.depth, O.size, O.churn ? ", churn" : "", fps,
                O.churn ? "connections" : "frames", (double)bytes / secs / 1e6, hist_quantile_us(&all, 0.5),
                hist_quantile_us(&all, 0.99));
    }
    return 0;
}

#endif
