/* nng's echo server over tls+tcp:// (Debian's libnng 1.5, whose TLS engine
 * is mbedtls 2.28: TLS 1.2): a raw REP socket, so that every request's
 * routing header comes back with its reply and one loop serves every
 * connection with many requests in flight on each: nng_recvmsg, then
 * nng_sendmsg of the same message (no copy). nng does the I/O and TLS on
 * its own threads. (PAIR1 in polyamorous mode was tried too: it drops a
 * message when a pipe's 2-deep send queue is full, which the loadgen's
 * checks caught.) No HMAC handshake (-k is ignored: the runner marks it
 * "no auth"). Its client is bench/clients/nng_client.c. */
#include "common.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>

static nng_socket sock;
static const char *fault; /* -x: flip a byte of, or drop, the 100th message */

static void fail(const char *what, int rv) {
    fprintf(stderr, "%s: %s\n", what, nng_strerror(rv));
    exit(1);
}

static void *echo(void *arg) {
    unsigned long count = 0;
    (void)arg;
    for (;;) {
        nng_msg *m;
        int rv = nng_recvmsg(sock, &m, 0);
        if (rv == NNG_ECLOSED) return NULL;
        if (rv) fail("nng_recvmsg", rv);
        if (fault && ++count == 100 && nng_msg_len(m) > 20) {
            if (!strcmp(fault, "drop")) {
                nng_msg_free(m);
                continue;
            }
            ((uint8_t *)nng_msg_body(m))[20] ^= 1;
        }
        if ((rv = nng_sendmsg(sock, m, 0))) {
            nng_msg_free(m);
            if (rv == NNG_ECLOSED) return NULL;
            fail("nng_sendmsg", rv);
        }
    }
}

int main(int argc, char **argv) {
    struct opts o;
    sigset_t sigs;
    nng_listener l;
    nng_tls_config *tls;
    pthread_t tid;
    char url[64];
    int rv, port;
    parse_opts(argc, argv, &o);
    fault = o.fault;
    if (!o.tls_cert) {
        fprintf(stderr, "%s: TLS only: -C CERT.pem -K KEY.pem\n", argv[0]);
        return 2;
    }
    raise_nofile();
    if ((rv = nng_rep0_open_raw(&sock))) fail("nng_rep0_open_raw", rv);
    if ((rv = nng_socket_set_size(sock, NNG_OPT_RECVMAXSZ, 0))) fail("recv-size-max", rv); /* 1 MiB frames */
    snprintf(url, sizeof url, "tls+tcp://127.0.0.1:%d", o.port);
    if ((rv = nng_listener_create(&l, sock, url))) fail("nng_listener_create", rv);
    if ((rv = nng_tls_config_alloc(&tls, NNG_TLS_MODE_SERVER))) fail("nng_tls_config_alloc", rv);
    if ((rv = nng_tls_config_own_cert(tls, read_file(o.tls_cert, NULL), read_file(o.tls_key, NULL), NULL)))
        fail("nng_tls_config_own_cert", rv);
    if ((rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, tls))) fail("tls-config", rv);
    if ((rv = nng_listener_set_size(l, NNG_OPT_RECVMAXSZ, 0))) fail("listener recv-size-max", rv);
    if ((rv = nng_listener_start(l, 0))) fail("nng_listener_start", rv);
    if ((rv = nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port))) fail("tcp-bound-port", rv);
    block_term(&sigs); /* before any thread: they inherit the mask */
    if (pthread_create(&tid, NULL, echo, NULL)) die("pthread_create");
    printf("listening tls://127.0.0.1:%d engine=%s\n", port, nng_tls_engine_name());
    fflush(stdout);
    wait_term(&sigs);
    nng_close(sock); /* the echo loop sees NNG_ECLOSED */
    pthread_join(tid, NULL);
    nng_tls_config_free(tls);
    return 0;
}
