/* ZeroMQ's echo server with CURVE security (Debian's libzmq 4.3 with
 * libsodium): a ROUTER socket whose one loop serves every connection,
 * receiving [peer identity][frame] and sending both parts back (zmq_msg_t
 * moved, no copy). The server's long-term key pair is made at start and
 * its public half announced on the "listening" line (curve=Z85), which the
 * runner hands to the client (--curve). -t: ZeroMQ I/O threads (default
 * 1). No HMAC handshake (-k ignored: "no auth"). Its client is
 * bench/clients/zmq_client.c. */
#include "common.h"

#include <zmq.h>

static void fail(const char *what) {
    fprintf(stderr, "%s: %s\n", what, zmq_strerror(zmq_errno()));
    exit(1);
}

static void *sock;
static const char *fault; /* -x: flip a byte of, or drop, the 100th message */

static void *echo(void *arg) {
    zmq_msg_t id, frame;
    unsigned long count = 0;
    (void)arg;
    zmq_msg_init(&id);
    zmq_msg_init(&frame);
    for (;;) {
        if (zmq_msg_recv(&id, sock, 0) < 0 || zmq_msg_recv(&frame, sock, 0) < 0) break;
        if (fault && ++count == 100 && zmq_msg_size(&frame) > 20) {
            if (!strcmp(fault, "drop")) continue;
            ((uint8_t *)zmq_msg_data(&frame))[20] ^= 1;
        }
        if (zmq_msg_send(&id, sock, ZMQ_SNDMORE) < 0 || zmq_msg_send(&frame, sock, 0) < 0) break;
    }
    if (zmq_errno() != ETERM) fail("echo");
    zmq_msg_close(&id);
    zmq_msg_close(&frame);
    zmq_close(sock);
    return NULL;
}

int main(int argc, char **argv) {
    struct opts o;
    sigset_t sigs;
    pthread_t tid;
    void *ctx;
    char pub[41], sec[41], ep[128];
    size_t eplen = sizeof ep;
    int one = 1, zero = 0, hwm = 100000;
    parse_opts(argc, argv, &o);
    fault = o.fault;
    raise_nofile();
    if (zmq_curve_keypair(pub, sec)) fail("zmq_curve_keypair (libzmq without CURVE?)");
    block_term(&sigs); /* before ZeroMQ's threads: they inherit the mask */
    if (!(ctx = zmq_ctx_new())) fail("zmq_ctx_new");
    if (zmq_ctx_set(ctx, ZMQ_IO_THREADS, o.threads > 0 ? o.threads : 1)) fail("io threads");
    if (zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, 65536)) fail("max sockets");
    if (!(sock = zmq_socket(ctx, ZMQ_ROUTER))) fail("zmq_socket");
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 40) || zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero) ||
        /* a ROUTER drops what it cannot queue: room for every frame in flight */
        zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm) || zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm) ||
        zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one))
        fail("zmq_setsockopt");
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", o.port);
    if (o.port == 0) snprintf(ep, sizeof ep, "tcp://127.0.0.1:*");
    if (zmq_bind(sock, ep)) fail("zmq_bind");
    if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, ep, &eplen)) fail("ZMQ_LAST_ENDPOINT");
    if (pthread_create(&tid, NULL, echo, NULL)) die("pthread_create");
    printf("listening %s curve=%s\n", ep, pub);
    fflush(stdout);
    wait_term(&sigs);
    zmq_ctx_shutdown(ctx); /* the echo loop sees ETERM and closes the socket */
    pthread_join(tid, NULL);
    zmq_ctx_term(ctx);
    return 0;
}
