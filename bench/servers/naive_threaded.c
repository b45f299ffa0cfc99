/* The naive baseline: a blocking thread per connection that reads the
 * 4-byte header, reads the payload, writes the frame back. Three system
 * calls per frame and no batching, on purpose: what a first C version of
 * "thread per connection" looks like. */
#include "auth.h"

#define MAX_FRAME (64u << 20)

static const char *key;

static int read_full(int fd, void *p, size_t n) {
    while (n) {
        ssize_t k = read(fd, p, n);
        if (k <= 0) {
            if (k < 0 && errno == EINTR) continue;
            return -1;
        }
        p = (uint8_t *)p + k;
        n -= (size_t)k;
    }
    return 0;
}

static int write_full(int fd, const void *p, size_t n) {
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p = (const uint8_t *)p + k;
        n -= (size_t)k;
    }
    return 0;
}

static int handshake(int fd) {
    struct auth a;
    uint8_t out[AUTH_OUT], f[AUTH_MAX_FRAME], h[4];
    size_t len = auth_start(&a, out);
    if (!len || write_full(fd, out, len)) return -1;
    while (a.state != AUTH_DONE) {
        uint32_t n;
        int rc;
        if (read_full(fd, h, 4) || (n = load_be32(h)) > AUTH_MAX_FRAME || read_full(fd, f, n)) return -1;
        rc = auth_step(&a, key, f, n, out, &len);
        if (len && write_full(fd, out, len)) return -1;
        if (rc) return -1;
    }
    return 0;
}

static void *serve(void *arg) {
    int fd = (int)(intptr_t)arg;
    uint8_t *buf = NULL, h[4];
    size_t cap = 0;
    set_nodelay(fd);
    if (!key || handshake(fd) == 0) {
        while (read_full(fd, h, 4) == 0) {
            uint32_t n = load_be32(h);
            if (n > MAX_FRAME) break; /* also a negative length */
            if (4 + n > cap) {
                uint8_t *q = realloc(buf, 4 + n);
                if (!q) break;
                buf = q;
                cap = 4 + n;
            }
            memcpy(buf, h, 4);
            if (read_full(fd, buf + 4, n) || write_full(fd, buf, 4 + n)) break;
        }
    }
    close(fd);
    free(buf);
    return NULL;
}

static void *accept_loop(void *arg) {
    int lfd = *(int *)arg;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (;;) {
        pthread_t t;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) usleep(10000); /* do not spin */
            continue;
        }
        if (pthread_create(&t, &attr, serve, (void *)(intptr_t)fd)) close(fd);
    }
    return NULL;
}

int main(int argc, char **argv) {
    struct opts o;
    sigset_t sigs;
    pthread_t t;
    int lfd;
    parse_opts(argc, argv, &o);
    key = o.key;
    raise_nofile();
    block_term(&sigs);
    lfd = listen_tcp(o.port, 0, 0);
    if (pthread_create(&t, NULL, accept_loop, &lfd)) die("pthread_create");
    announce(bound_port(lfd));
    wait_term(&sigs);
    return 0;
}
