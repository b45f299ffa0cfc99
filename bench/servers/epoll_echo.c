/* The practical limit: a hand-written epoll echo server for frames.
 *
 * One epoll and one SO_REUSEPORT listener per thread (default: one per
 * CPU): the kernel spreads connections, so threads share nothing and take
 * no locks. Level-triggered. Per readable event: one read into a large
 * per-thread buffer, find every whole frame, echo them all with one write.
 * A partial frame waits in a per-connection buffer and unsent bytes in
 * another; both exist only while needed (a connection sending frames over
 * 64 KiB keeps its buffer, reads them straight into place and writes them
 * from there), so an idle connection costs its small struct and nothing
 * else. While output is pending the connection is not read
 * (backpressure). Frames are echoed whole, never streamed before they
 * are complete, as a framed server must. */
#include "auth.h" /* first: common.h defines _GNU_SOURCE */

#include <sys/epoll.h>

#define RBUF (256 * 1024)
#define MAX_FRAME ((uint64_t)64 << 20)
#define MIN_IN (64 * 1024)

/* Bytes [off, len) of p are pending; p is NULL when nothing is. */
struct buf {
    uint8_t *p;
    size_t off, len, cap;
};

struct conn {
    int fd;
    struct auth *auth; /* during the handshake only */
    struct buf in, out;
    size_t want; /* size of the frame being assembled in `in`; 0: unknown yet */
};

struct worker {
    int lfd, ep;
    const char *key;
    uint8_t *rbuf;
    pthread_t th;
};

static void conn_close(struct conn *c) {
    close(c->fd); /* also leaves the epoll set */
    free(c->in.p);
    free(c->out.p);
    free(c->auth);
    free(c);
}

static void watch(struct worker *w, struct conn *c, uint32_t events, int op) {
    struct epoll_event e;
    e.events = events;
    e.data.ptr = c;
    if (epoll_ctl(w->ep, op, c->fd, &e)) die("epoll_ctl");
}

/* Writes what the socket takes now; the rest waits in c->out, and the
 * connection switches from reading to waiting for EPOLLOUT. */
static int conn_send(struct worker *w, struct conn *c, const uint8_t *p, size_t n) {
    if (!c->out.p) {
        ssize_t k = write(c->fd, p, n);
        if (k < 0) {
            if (errno != EAGAIN) return -1;
            k = 0;
        }
        if ((size_t)k == n) return 0;
        p += k;
        n -= (size_t)k;
        watch(w, c, EPOLLOUT, EPOLL_CTL_MOD);
    }
    if (c->out.len + n > c->out.cap) {
        size_t cap = c->out.len + n > 2 * c->out.cap ? c->out.len + n : 2 * c->out.cap;
        uint8_t *q = realloc(c->out.p, cap);
        if (!q) return -1;
        c->out.p = q;
        c->out.cap = cap;
    }
    memcpy(c->out.p + c->out.len, p, n);
    c->out.len += n;
    return 0;
}

static void on_writable(struct worker *w, struct conn *c) {
    ssize_t k = write(c->fd, c->out.p + c->out.off, c->out.len - c->out.off);
    if (k < 0) {
        if (errno != EAGAIN) conn_close(c);
        return;
    }
    c->out.off += (size_t)k;
    if (c->out.off == c->out.len) {
        if (!c->in.p && c->out.cap > MIN_IN) { /* big frames: the buffer goes back to reading */
            c->in.p = c->out.p;
            c->in.cap = c->out.cap;
        } else {
            free(c->out.p);
        }
        memset(&c->out, 0, sizeof c->out);
        watch(w, c, EPOLLIN, EPOLL_CTL_MOD);
    }
}

static int handshake(struct worker *w, struct conn *c, const uint8_t *f, size_t n) {
    uint8_t out[AUTH_OUT];
    size_t len;
    int rc;
    if (n > AUTH_MAX_FRAME) return -1;
    rc = auth_step(c->auth, w->key, f, n, out, &len);
    if (len && conn_send(w, c, out, len)) return -1;
    if (rc) return -1; /* #FAILURE# went out first where the protocol says so */
    if (c->auth->state == AUTH_DONE) {
        free(c->auth);
        c->auth = NULL;
    }
    return 0;
}

/* Keeps the `left` bytes at `p` (a partial frame) in c->in, with room for
 * `need` bytes (the whole frame; 0: its header is not complete yet).
 * `in_place`: p points into c->in already. A connection whose frames are
 * big keeps its in-buffer, so that they are read straight into it. */
static int keep_partial(struct conn *c, const uint8_t *p, size_t left, size_t need, int in_place) {
    size_t cap = need > MIN_IN ? need : MIN_IN;
    c->want = left ? need : 0;
    if (!left && !(in_place && c->in.cap > MIN_IN)) {
        free(c->in.p);
        memset(&c->in, 0, sizeof c->in);
        return 0;
    }
    if (!in_place) { /* from the thread's buffer, or c->in just became c->out */
        uint8_t *q = malloc(cap);
        if (!q) return -1;
        memcpy(q, p, left);
        c->in.p = q;
        c->in.cap = cap;
    } else {
        memmove(c->in.p, p, left);
        if (c->in.cap < need) {
            uint8_t *q = realloc(c->in.p, need);
            if (!q) return -1;
            c->in.p = q;
            c->in.cap = need;
        }
    }
    c->in.len = left;
    return 0;
}

static void on_readable(struct worker *w, struct conn *c) {
    int from_in = c->in.p != NULL;
    uint8_t *data = from_in ? c->in.p : w->rbuf;
    size_t have = from_in ? c->in.len : 0, off = 0, start = 0, need = 0;
    size_t room = from_in ? c->in.cap - have : RBUF;
    ssize_t k;
    /* Read a frame being assembled only up to its end: then it leaves
     * whole, and no bytes of the next one have to be moved. */
    if (from_in && c->want > have) room = c->want - have;
    k = read(c->fd, data + have, room);
    if (k <= 0) {
        if (k < 0 && (errno == EAGAIN || errno == EINTR)) return;
        goto fail; /* end of stream or error */
    }
    have += (size_t)k;
    while (have - off >= 4) {
        int32_t h = (int32_t)load_be32(data + off);
        uint64_t n = (uint64_t)h;
        size_t hl = 4;
        if (h == -1) { /* the long form: 8 more bytes of length */
            if (have - off < 12) break;
            n = (uint64_t)load_be32(data + off + 4) << 32 | load_be32(data + off + 8);
            hl = 12;
        } else if (h < 0) {
            goto fail;
        }
        if (n > MAX_FRAME) goto fail;
        if (have - off - hl < n) {
            need = hl + (size_t)n;
            break;
        }
        if (c->auth) {
            if (handshake(w, c, data + off + hl, (size_t)n)) goto fail;
            start = off + hl + (size_t)n; /* handshake frames are answered, not echoed */
        }
        off += hl + (size_t)n;
    }
    if (off > start) {
        if (from_in && !c->out.p) {
            /* Big frames: write straight from the in-buffer, and if the
             * socket takes only part, that buffer becomes the out-buffer
             * instead of copying a MiB. */
            k = write(c->fd, data + start, off - start);
            if (k < 0) {
                if (errno != EAGAIN) goto fail;
                k = 0;
            }
            if ((size_t)k < off - start) {
                c->out = c->in;
                c->out.off = start + (size_t)k;
                c->out.len = off;
                memset(&c->in, 0, sizeof c->in);
                watch(w, c, EPOLLOUT, EPOLL_CTL_MOD);
            }
        } else if (conn_send(w, c, data + start, off - start)) {
            goto fail;
        }
    }
    if (keep_partial(c, data + off, have - off, need, from_in && c->in.p == data)) goto fail;
    return;
fail:
    conn_close(c);
}

static void on_accept(struct worker *w) {
    for (int i = 0; i < 64; i++) {
        uint8_t out[AUTH_OUT];
        struct conn *c;
        int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) usleep(1000); /* do not spin */
            return;
        }
        set_nodelay(fd);
        c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        if (w->key) { /* the challenge fits any fresh socket buffer */
            size_t n;
            c->auth = malloc(sizeof *c->auth);
            n = c->auth ? auth_start(c->auth, out) : 0;
            if (!n || write(fd, out, n) != (ssize_t)n) {
                conn_close(c);
                continue;
            }
        }
        watch(w, c, EPOLLIN, EPOLL_CTL_ADD);
    }
}

static void *worker_run(void *arg) {
    struct worker *w = arg;
    struct epoll_event ev[256];
    for (;;) {
        int n = epoll_wait(w->ep, ev, 256, -1);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct conn *c = ev[i].data.ptr;
            if (!c)
                on_accept(w);
            else if (c->out.p)
                on_writable(w, c);
            else
                on_readable(w, c);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    struct opts o;
    sigset_t sigs;
    int port, nthreads;
    struct worker *ws;
    parse_opts(argc, argv, &o);
    raise_nofile();
    block_term(&sigs);
    nthreads = o.threads > 0 ? o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    ws = calloc((size_t)nthreads, sizeof *ws);
    if (!ws) die("calloc");
    port = o.port;
    for (int i = 0; i < nthreads; i++) {
        struct epoll_event e;
        ws[i].lfd = listen_tcp(port, 1, 1);
        port = bound_port(ws[i].lfd); /* the others join the first one's port */
        ws[i].ep = epoll_create1(EPOLL_CLOEXEC);
        ws[i].key = o.key;
        ws[i].rbuf = malloc(RBUF);
        if (ws[i].ep < 0 || !ws[i].rbuf) die("epoll_create1");
        e.events = EPOLLIN;
        e.data.ptr = NULL;
        if (epoll_ctl(ws[i].ep, EPOLL_CTL_ADD, ws[i].lfd, &e)) die("epoll_ctl");
    }
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&ws[i].th, NULL, worker_run, &ws[i])) die("pthread_create");
    announce(port);
    wait_term(&sigs);
    return 0; /* exiting ends the workers; the kernel closes every socket */
}
