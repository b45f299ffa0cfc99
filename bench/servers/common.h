/* What the C baseline servers share: options, the listening socket, the
 * announcement line the runner reads, and SIGTERM handling.
 *
 * Every server: `prog [-p PORT] [-k KEY] [-t THREADS] [-c] [-C CERT -K KEY]`,
 * binds 127.0.0.1 (port 0 by default), prints "listening tcp://127.0.0.1:PORT"
 * (or tls://...) on stdout, and exits with status 0 on SIGTERM or SIGINT.
 * -C/-K: the TLS certificate chain and private key (PEM files), for the
 * servers that speak TLS. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

struct opts {
    int port;
    const char *key; /* NULL: no handshake */
    int threads;     /* 0: the server's default */
    int coalesce;    /* -c: a server's own batching option, where it has one */
    const char *tls_cert, *tls_key; /* -C, -K: PEM files; NULL: no TLS */
    const char *fault; /* -x flip|drop: spoil the 100th message (the self-check of a baseline's own client) */
};

static inline void die(const char *what) {
    perror(what);
    exit(1);
}

static inline void parse_opts(int argc, char **argv, struct opts *o) {
    int c;
    memset(o, 0, sizeof *o);
    while ((c = getopt(argc, argv, "p:k:t:cC:K:x:")) != -1) {
        switch (c) {
        case 'p': o->port = atoi(optarg); break;
        case 'k': o->key = optarg[0] ? optarg : NULL; break;
        case 't': o->threads = atoi(optarg); break;
        case 'c': o->coalesce = 1; break;
        case 'C': o->tls_cert = optarg; break;
        case 'K': o->tls_key = optarg; break;
        case 'x': o->fault = optarg; break;
        default:
            fprintf(stderr, "usage: %s [-p PORT] [-k KEY] [-t THREADS] [-c] [-C CERT.pem -K KEY.pem]\n", argv[0]);
            exit(2);
        }
    }
    if (!o->tls_cert != !o->tls_key) {
        fprintf(stderr, "%s: -C and -K go together\n", argv[0]);
        exit(2);
    }
}

/* A whole file as a NUL-terminated string (PEM for the TLS libraries). */
static inline char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) die(path);
    buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) die(path);
    buf[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

/* 10,000 connections need more descriptors than the usual soft limit. */
static inline void raise_nofile(void) {
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

/* A listening TCP socket on 127.0.0.1:port (0: any free port). */
static inline int listen_tcp(int port, int reuseport, int nonblock) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0), on = 1;
    struct sockaddr_in a;
    if (fd < 0) die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on)) die("SO_REUSEPORT");
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a)) die("bind");
    if (listen(fd, 4096)) die("listen");
    return fd;
}

static inline int bound_port(int fd) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &len)) die("getsockname");
    return ntohs(a.sin_port);
}

static inline void announce(int port) {
    printf("listening tcp://127.0.0.1:%d\n", port);
    fflush(stdout);
}

static inline void set_nodelay(int fd) {
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

/* Block SIGTERM/SIGINT before starting threads (they inherit the mask),
 * so that only wait_term() sees them. */
static inline void block_term(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGPIPE); /* a peer gone mid-write is an EPIPE, not a death */
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

static inline void wait_term(sigset_t *set) {
    int sig = 0;
    do {
        sigwait(set, &sig);
    } while (sig == SIGPIPE);
}

static inline uint32_t load_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void store_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

#endif
