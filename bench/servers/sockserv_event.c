/* sockserv's event-driven mode through its C API: a few I/O threads hold
 * every connection and on_frame echoes each frame with sockserv_conn_send,
 * which queues it (the I/O thread writes many frames per system call). */
#include "common.h"
#include "sockserv.h"

static void on_frame(void *userdata, sockserv_conn *conn, const uint8_t *data, size_t len) {
    (void)userdata;
    sockserv_conn_send(conn, data, len);
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
    /* The scale scenario holds 10,100 connections. */
    check(sockserv_config_set_max_connections(cfg, 20000), "max_connections");
    check(sockserv_config_set_backlog(cfg, 4096), "backlog");
    check(sockserv_config_set_io_threads(cfg, (size_t)o.threads), "io_threads"); /* 0: one per CPU */
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
    check(sockserv_server_set_event_handlers(srv, NULL, on_frame, NULL, NULL), "handlers");
    check(sockserv_server_local_addr(srv, addr, sizeof addr, &n), "local_addr");
    block_term(&sigs); /* before start: sockserv's threads inherit the mask */
    check(sockserv_server_start(srv), "start");
    printf("listening %s\n", addr);
    fflush(stdout);
    wait_term(&sigs);
    sockserv_server_shutdown(srv);
    sockserv_server_free(srv); /* closes every connection, joins the I/O threads */
    return 0;
}
