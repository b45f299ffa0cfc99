/*
 * echo_client: sends each MESSAGE as one frame and prints the echo.
 *
 *     SOCKSERV_KEY=secret ./echo_client tcp://127.0.0.1:9000 hello world
 *     ./echo_client -k secret unix:///tmp/echo.sock hello
 *     ./echo_client -k secret -A ca.pem tls://127.0.0.1:9443 hello
 *     ./echo_client -k secret -A ca.pem -C client.pem -K client.key tls://...
 *         (TLS, trusting the CA in ca.pem; -C/-K: a client certificate for
 *          a server that requires one)
 *
 * Over TLS it prints the server certificate's subject and SHA-256
 * fingerprint on stderr (stdout has only the echoes). Exits 0 when every
 * message came back, 1 on any failure (a wrong key gives "authentication
 * failed", a server certificate from another CA "certificate verify
 * failed: unknown issuer"), 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sockserv.h"

/* Prints the failed step, the code's static text and this thread's detail. */
static int fail(const char *what, sockserv_result rc)
{
    char detail[512];
    sockserv_last_error(detail, sizeof detail);
    fprintf(stderr, "echo_client: %s: %s\n  detail: %s\n", what, sockserv_strerror(rc), detail);
    return 1;
}

static int usage(void)
{
    fprintf(stderr, "usage: echo_client [-k KEY] [-A CA [-C CERT -K KEY_FILE]] ADDR [MESSAGE...]\n"
                    "  (or the key in SOCKSERV_KEY)   -A: the CA to trust for tls://ADDR\n");
    return 2;
}

/* Whom we reached: the server certificate's subject and fingerprint. */
static void print_server_certificate(const sockserv_conn *conn)
{
    uint8_t fp[32];
    char subject[256];
    size_t needed;
    if (sockserv_conn_peer_cert_sha256(conn, fp) != SOCKSERV_OK ||
        sockserv_conn_peer_cert_subject(conn, subject, sizeof subject, &needed) != SOCKSERV_OK)
        return; /* not TLS */
    char hex[3 * sizeof fp];
    for (size_t i = 0; i < sizeof fp; i++)
        snprintf(hex + 3 * i, 4, "%02X%s", fp[i], i + 1 < sizeof fp ? ":" : "");
    int version = 0;
    char alpn[64] = "";
    sockserv_conn_tls_info(conn, &version, alpn, sizeof alpn, &needed);
    fprintf(stderr, "echo_client: TLS %s, server certificate %s\n  sha256 %s\n",
            version == SOCKSERV_TLS_VERSION_1_3   ? "1.3"
            : version == SOCKSERV_TLS_VERSION_1_2 ? "1.2"
                                                  : "?",
            subject, hex);
}

int main(int argc, char **argv)
{
    const char *key = getenv("SOCKSERV_KEY");
    const char *ca = NULL, *cert = NULL, *cert_key = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "k:A:C:K:")) != -1) {
        switch (opt) {
        case 'k': key = optarg; break;
        case 'A': ca = optarg; break;
        case 'C': cert = optarg; break;
        case 'K': cert_key = optarg; break;
        default: return usage();
        }
    }
    if (optind >= argc || !cert != !cert_key)
        return usage();
    const char *addr = argv[optind];

    sockserv_config *config;
    sockserv_result rc = sockserv_config_new(&config);
    if (rc)
        return fail("config", rc);
    if (key && *key)
        rc = sockserv_config_set_auth_key(config, (const uint8_t *)key, strlen(key));
    /* Never wait for ever on a server that stopped answering. */
    if (!rc)
        rc = sockserv_config_set_io_timeout_ms(config, 10000);
    if (rc) {
        sockserv_config_free(config);
        return fail("config", rc);
    }
    /* The server's certificate must chain to this CA and name the host we dial. */
    if (ca)
        rc = sockserv_config_set_tls_ca_file(config, ca);
    if (!rc && cert)
        rc = sockserv_config_set_tls_cert_files(config, cert, cert_key);
    if (rc) {
        sockserv_config_free(config);
        return fail("tls", rc);
    }

    /* Connects, then runs the handshake when the config has a key. */
    sockserv_conn *conn;
    rc = sockserv_connect(addr, config, &conn);
    sockserv_config_free(config); /* the connection keeps its own copy */
    if (rc) {
        char what[600];
        snprintf(what, sizeof what, "cannot connect to %s", addr);
        return fail(what, rc);
    }
    print_server_certificate(conn);

    int status = 0;
    for (int i = optind + 1; i < argc; i++) {
        const uint8_t *echo;
        size_t len;
        rc = sockserv_conn_send(conn, (const uint8_t *)argv[i], strlen(argv[i]));
        if (rc) {
            status = fail("send", rc);
            break;
        }
        /* `echo` points into the connection's buffer until the next receive. */
        rc = sockserv_conn_recv(conn, &echo, &len);
        if (rc) {
            status = fail("receive", rc);
            break;
        }
        fwrite(echo, 1, len, stdout);
        putchar('\n');
    }
    sockserv_conn_free(conn);
    return status;
}
