/*
 * echo_client: sends each MESSAGE as one frame and prints the echo.
 *
 *     SOCKSERV_KEY=secret ./echo_client tcp://127.0.0.1:9000 hello world
 *     ./echo_client -k secret unix:///tmp/echo.sock hello
 *
 * Exits 0 when every message came back, 1 on any failure (a wrong key
 * gives "authentication failed"), 2 on bad usage.
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
    fprintf(stderr, "usage: echo_client [-k KEY] ADDR [MESSAGE...]   (or the key in SOCKSERV_KEY)\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *key = getenv("SOCKSERV_KEY");
    int opt;
    while ((opt = getopt(argc, argv, "k:")) != -1) {
        if (opt != 'k')
            return usage();
        key = optarg;
    }
    if (optind >= argc)
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

    /* Connects, then runs the handshake when the config has a key. */
    sockserv_conn *conn;
    rc = sockserv_connect(addr, config, &conn);
    sockserv_config_free(config); /* the connection keeps its own copy */
    if (rc) {
        char what[600];
        snprintf(what, sizeof what, "cannot connect to %s", addr);
        return fail(what, rc);
    }

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
