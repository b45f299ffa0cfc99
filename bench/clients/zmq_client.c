/* The client for bench/servers/zmq_echo.c: one DEALER socket per
 * connection with CURVE (the server's public key from --curve, one client
 * key pair per process), over one ZeroMQ context with one I/O thread.
 * --churn: a new socket, connect, CURVE handshake, one echo, close. The
 * scenarios and checks are client.h's. */
#include "client.h"

#include <zmq.h>

static void *ctx;
static char pub[41], sec[41];
static char endpoint[128];

static int init(const struct copts *o, char *err, size_t errlen) {
    if (!o->curve || strlen(o->curve) != 40)
        return snprintf(err, errlen, "--curve SERVER_PUBLIC_KEY (40 characters of Z85) is required"), -1;
    if (zmq_curve_keypair(pub, sec)) return snprintf(err, errlen, "zmq_curve_keypair: %s", zmq_strerror(zmq_errno())), -1;
    if (!(ctx = zmq_ctx_new()) || zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, 65536))
        return snprintf(err, errlen, "zmq_ctx_new: %s", zmq_strerror(zmq_errno())), -1;
    snprintf(endpoint, sizeof endpoint, "tcp://%s", o->addr);
    return 0;
}

static void *open_conn(const struct copts *o, int id, char *err, size_t errlen) {
    int zero = 0, timeout = (int)(o->drain_timeout * 1000), hwm = 100000;
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    (void)id;
    if (!s) return snprintf(err, errlen, "zmq_socket: %s", zmq_strerror(zmq_errno())), NULL;
    if (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, o->curve, 40) || zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 40) ||
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 40) || zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout) ||
        zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeout, sizeof timeout) ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm) || zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm) ||
        zmq_connect(s, endpoint)) {
        snprintf(err, errlen, "connect %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    return s;
}

static int send_frame(void *h, const uint8_t *buf, size_t len, char *err, size_t errlen) {
    if (zmq_send(h, buf, len, 0) < 0) return snprintf(err, errlen, "%s", zmq_strerror(zmq_errno())), -1;
    return 0;
}

static int recv_frame(void *h, const uint8_t **buf, size_t *len, void **msg, char *err, size_t errlen) {
    zmq_msg_t *m = malloc(sizeof *m);
    if (!m) return snprintf(err, errlen, "out of memory"), -1;
    zmq_msg_init(m);
    if (zmq_msg_recv(m, h, 0) < 0) {
        snprintf(err, errlen, "%s", zmq_strerror(zmq_errno()));
        zmq_msg_close(m);
        free(m);
        return -1;
    }
    *buf = zmq_msg_data(m);
    *len = zmq_msg_size(m);
    *msg = m;
    return 0;
}

static void release(void *msg) {
    zmq_msg_close(msg);
    free(msg);
}

static void close_conn(void *h) { zmq_close(h); }

int main(int argc, char **argv) {
    static const struct transport t = {"zmq", init, open_conn, send_frame, recv_frame, release, close_conn};
    return client_main(argc, argv, &t);
}
