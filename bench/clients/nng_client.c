/* The client for bench/servers/nng_echo.c: one raw REQ socket per
 * connection dialing tls+tcp:// (raw, so that many requests can be in
 * flight on it: each carries a request id of our own in its header),
 * verifying the server's certificate against --tls-ca (name localhost).
 * --churn: a cooked REQ socket, dial, TLS handshake, one request and its
 * reply, close. The scenarios and checks are client.h's. */
#include "client.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>

struct conn {
    nng_socket s;
    nng_dialer d;
    int raw;
    uint32_t next_id;
};

static nng_tls_config *tls;
static char url[128];

static int init(const struct copts *o, char *err, size_t errlen) {
    int rv;
    if (!o->ca) return snprintf(err, errlen, "--tls-ca CA.pem is required"), -1;
    snprintf(url, sizeof url, "tls+tcp://%s", o->addr);
    if ((rv = nng_tls_config_alloc(&tls, NNG_TLS_MODE_CLIENT)) || (rv = nng_tls_config_ca_file(tls, o->ca)) ||
        (rv = nng_tls_config_server_name(tls, "localhost")) ||
        (rv = nng_tls_config_auth_mode(tls, NNG_TLS_AUTH_MODE_REQUIRED)))
        return snprintf(err, errlen, "TLS configuration: %s", nng_strerror(rv)), -1;
    return 0;
}

static void *open_conn(const struct copts *o, int id, char *err, size_t errlen) {
    struct conn *c = calloc(1, sizeof *c);
    int rv;
    nng_duration timeout = (nng_duration)(o->drain_timeout * 1000);
    (void)id;
    if (!c) return snprintf(err, errlen, "out of memory"), NULL;
    if ((rv = (c->raw = !o->churn) ? nng_req0_open_raw(&c->s) : nng_req0_open(&c->s))) {
        free(c);
        return snprintf(err, errlen, "nng_req0_open: %s", nng_strerror(rv)), NULL;
    }
    if ((rv = nng_socket_set_size(c->s, NNG_OPT_RECVMAXSZ, 0)) ||
        (rv = nng_socket_set_ms(c->s, NNG_OPT_RECVTIMEO, timeout)) ||
        (rv = nng_socket_set_ms(c->s, NNG_OPT_SENDTIMEO, timeout)) || (rv = nng_dialer_create(&c->d, c->s, url)) ||
        (rv = nng_dialer_set_ptr(c->d, NNG_OPT_TLS_CONFIG, tls)) || (rv = nng_dialer_set_size(c->d, NNG_OPT_RECVMAXSZ, 0)) ||
        (rv = nng_dialer_start(c->d, 0))) {
        nng_close(c->s);
        free(c);
        return snprintf(err, errlen, "dial %s: %s", url, nng_strerror(rv)), NULL;
    }
    return c;
}

static int send_frame(void *h, const uint8_t *buf, size_t len, char *err, size_t errlen) {
    struct conn *c = h;
    nng_msg *m;
    int rv;
    if ((rv = nng_msg_alloc(&m, len))) return snprintf(err, errlen, "nng_msg_alloc: %s", nng_strerror(rv)), -1;
    memcpy(nng_msg_body(m), buf, len);
    /* A raw REQ socket leaves the request id to us (high bit set). */
    if ((c->raw && (rv = nng_msg_header_append_u32(m, 0x80000000u | (c->next_id++ & 0x7fffffffu)))) ||
        (rv = nng_sendmsg(c->s, m, 0))) {
        nng_msg_free(m);
        return snprintf(err, errlen, "%s", nng_strerror(rv)), -1;
    }
    return 0;
}

static int recv_frame(void *h, const uint8_t **buf, size_t *len, void **msg, char *err, size_t errlen) {
    struct conn *c = h;
    nng_msg *m;
    int rv = nng_recvmsg(c->s, &m, 0);
    if (rv) return snprintf(err, errlen, "%s", nng_strerror(rv)), -1;
    *buf = nng_msg_body(m);
    *len = nng_msg_len(m);
    *msg = m;
    return 0;
}

static void release(void *msg) { nng_msg_free(msg); }

static void close_conn(void *h) {
    struct conn *c = h;
    /* nng 1.5.2's nng_close of a raw REQ socket over TLS hangs now and then
     * (in its reaper, after every reply has come): the steady scenarios'
     * sockets are left to the process's exit. */
    if (c->raw) return;
    nng_close(c->s);
    free(c);
}

int main(int argc, char **argv) {
    static const struct transport t = {"nng", init, open_conn, send_frame, recv_frame, release, close_conn};
    return client_main(argc, argv, &t);
}
