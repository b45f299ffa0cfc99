/* sockserv's threaded mode through its C API, used the way the README
 * shows: a handler per connection that receives a frame and sends it back. */
#include "common.h"
#include "sockserv.h"

static void echo(void *userdata, sockserv_conn *conn) {
    const uint8_t *frame;
    size_t len;
    (void)userdata;
    while (sockserv_conn_recv(conn, &frame, &len) == SOCKSERV_OK)
        if (sockserv_conn_send(conn, frame, len) != SOCKSERV_OK) break;
}

static void check(sockserv_result rc, const char *what) {
    char detail[256];
    if (rc == SOCKSERV_OK) return;
    sockserv_last_error(detail, sizeof detail);
    fprintf(stderr, "%s: %s (%s)\n", what, sockserv_strerror(rc), detail);
    exit(1);
}

int main(int argc, char **argv) {
    struct opts o;
    sigset_t sigs;
    sockserv_config *cfg;
    sockserv_server *srv;
    char addr[SOCKSERV_ADDRSTRLEN];
    size_t n;
    parse_opts(argc, argv, &o);
    raise_nofile();
    check(sockserv_config_new(&cfg), "config");
    if (o.key) check(sockserv_config_set_auth_key(cfg, (const uint8_t *)o.key, strlen(o.key)), "key");
    /* The scale scenario holds 10,100 connections: one thread each. */
    check(sockserv_config_set_max_connections(cfg, 20000), "max_connections");
    check(sockserv_config_set_backlog(cfg, 4096), "backlog");
    /* -c: replies to a pipelining client leave many per system call. */
    if (o.coalesce) check(sockserv_config_set_coalesce_sends(cfg, true), "coalesce");
    if (o.tls_cert) {
        /* TLS (issue 11): tls:// with this chain and key; with -k the HMAC
         * handshake runs inside it. */
#ifdef SOCKSERV_TLS_CLIENT_AUTH_NONE
        check(sockserv_config_set_tls_cert_files(cfg, o.tls_cert, o.tls_key), "TLS certificate");
#else
        fprintf(stderr, "-C/-K: this libsockserv has no TLS yet\n");
        return 2;
#endif
    }
    snprintf(addr, sizeof addr, "%s://127.0.0.1:%d", o.tls_cert ? "tls" : "tcp", o.port);
    check(sockserv_server_new(addr, cfg, &srv), "server");
    sockserv_config_free(cfg);
    check(sockserv_server_set_handler(srv, echo, NULL), "handler");
    check(sockserv_server_local_addr(srv, addr, sizeof addr, &n), "local_addr");
    block_term(&sigs); /* before start: sockserv's threads inherit the mask */
    check(sockserv_server_start(srv), "start");
    printf("listening %s\n", addr);
    fflush(stdout);
    wait_term(&sigs);
    sockserv_server_shutdown(srv);
    sockserv_server_free(srv); /* closes live connections, joins threads */
    return 0;
}
