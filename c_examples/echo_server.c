/*
 * echo_server: a sockserv server that sends every frame back.
 *
 *     SOCKSERV_KEY=secret ./echo_server tcp://127.0.0.1:9000
 *     ./echo_server -k secret unix:///tmp/echo.sock
 *     ./echo_server -k secret systemd://       (socket activation)
 *     ./echo_server -k secret -r -p -v tcp://127.0.0.1:9000
 *         (-r: SO_REUSEPORT, several servers on one port; -p: behind a
 *          load balancer sending the PROXY protocol; -v: log each client)
 *     ./echo_server -k secret -C server.pem -K server.key tls://127.0.0.1:9443
 *     ./echo_server -k secret -C server.pem -K server.key -A ca.pem tls://...
 *         (TLS with this certificate chain and key; -A: clients must show a
 *          certificate signed by this CA: mutual TLS)
 *
 * Clients must prove they know the key (HMAC-SHA256 challenge-response,
 * inside TLS on tls://) before the handler sees them; each refused peer is
 * reported on stderr, a refused certificate too.
 * Once bound, the server prints one line,
 * "listening on ADDR", with the real port when ADDR asks for port 0. It
 * stops cleanly on SIGINT or SIGTERM and exits 0.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sockserv.h"

/* Prints the failed step, the code's static text and this thread's detail. */
static void report(const char *what, sockserv_result rc)
{
    char detail[512];
    sockserv_last_error(detail, sizeof detail);
    fprintf(stderr, "echo_server: %s: %s (%s)\n", what, sockserv_strerror(rc), detail);
}

/*
 * Every peer the library turns away (wrong key, old Python's MD5, a bad
 * PROXY header, the connection cap...), with its address and why. Runs on
 * sockserv's threads; one fprintf is one write, so lines do not mix.
 */
static void print_refusal(void *userdata, const char *peer, sockserv_result code,
                          const char *detail)
{
    (void)userdata;
    fprintf(stderr, "echo_server: refused %s: %s (%s)\n", peer, sockserv_strerror(code), detail);
}

/*
 * Runs on a thread of its own for each authenticated connection. `conn` is
 * lent by the server, which closes it when we return.
 */
static void echo_handler(void *userdata, sockserv_conn *conn)
{
    const int *verbose = userdata;
    if (*verbose) {
        /* Behind a proxy (-p) this is the client's address, not the proxy's. */
        char peer[SOCKSERV_ADDRSTRLEN];
        char subject[256];
        size_t needed;
        if (sockserv_conn_peer_addr(conn, peer, sizeof peer, &needed) != SOCKSERV_OK)
            strcpy(peer, "?");
        /* With -A, the client's certificate: whom the CA vouched for. */
        if (sockserv_conn_peer_cert_subject(conn, subject, sizeof subject, &needed) ==
            SOCKSERV_OK)
            fprintf(stderr, "echo_server: connection from %s, certificate %s\n", peer, subject);
        else
            fprintf(stderr, "echo_server: connection from %s\n", peer);
    }
    for (;;) {
        const uint8_t *data;
        size_t len;
        sockserv_result rc = sockserv_conn_recv(conn, &data, &len);
        if (rc == SOCKSERV_ERR_CLOSED || rc == SOCKSERV_ERR_SHUTDOWN)
            return; /* the client left, or we are stopping: not errors */
        if (rc) {
            report("receive", rc);
            return;
        }
        /* `data` is borrowed until the next receive: send it back first. */
        rc = sockserv_conn_send(conn, data, len);
        if (rc) {
            report("send", rc);
            return;
        }
    }
}

struct stopper {
    sigset_t signals;
    sockserv_server *server;
};

/*
 * Waits for SIGINT or SIGTERM with sigwait: the signal arrives here as
 * ordinary thread code, not in a signal handler, so calling
 * sockserv_server_shutdown (which is not async-signal-safe) is fine.
 */
static void *wait_for_stop_signal(void *arg)
{
    struct stopper *stopper = arg;
    int sig;
    if (sigwait(&stopper->signals, &sig) == 0)
        fprintf(stderr, "echo_server: %s received, stopping\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM");
    sockserv_server_shutdown(stopper->server);
    return NULL;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: echo_server [-k KEY] [-r] [-p] [-v] [-C CERT -K KEY_FILE [-A CA]] ADDR\n"
            "  (or the key in SOCKSERV_KEY)   e.g. echo_server tcp://127.0.0.1:9000\n"
            "  -r  SO_REUSEPORT   -p  require the PROXY protocol   -v  log each client\n"
            "  -C/-K  TLS certificate chain and private key (PEM), for tls://ADDR\n"
            "  -A  require client certificates signed by this CA (mutual TLS)\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *key = getenv("SOCKSERV_KEY");
    const char *cert = NULL, *cert_key = NULL, *ca = NULL;
    int reuse_port = 0, proxy = 0, verbose = 0;
    int opt;
    while ((opt = getopt(argc, argv, "k:rpvC:K:A:")) != -1) {
        switch (opt) {
        case 'k': key = optarg; break;
        case 'C': cert = optarg; break;
        case 'K': cert_key = optarg; break;
        case 'A': ca = optarg; break;
        case 'r': reuse_port = 1; break;
        case 'p': proxy = 1; break;
        case 'v': verbose = 1; break;
        default: return usage();
        }
    }
    if (optind != argc - 1 || !cert != !cert_key || (ca && !cert))
        return usage();
    const char *addr = argv[optind];

    /*
     * Block the stop signals before any thread exists: every thread,
     * sockserv's included, inherits the mask, so only sigwait sees them.
     */
    struct stopper stopper;
    sigemptyset(&stopper.signals);
    sigaddset(&stopper.signals, SIGINT);
    sigaddset(&stopper.signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stopper.signals, NULL);

    sockserv_set_refusal_log(print_refusal, NULL);

    sockserv_config *config;
    sockserv_result rc = sockserv_config_new(&config);
    if (rc) {
        report("config", rc);
        return 1;
    }
    if (key) {
        /*
         * An empty key (-k "" or SOCKSERV_KEY=) is refused by the library,
         * and so here: it is a mistake, not a wish to serve everyone.
         */
        rc = sockserv_config_set_auth_key(config, (const uint8_t *)key, strlen(key));
        if (rc) {
            report("key", rc);
            sockserv_config_free(config);
            return 1;
        }
    } else {
        fprintf(stderr, "echo_server: no key (-k or SOCKSERV_KEY): anyone may connect\n");
    }
    if (cert) {
        /* The chain and key are read and checked here: a bad file fails now. */
        rc = sockserv_config_set_tls_cert_files(config, cert, cert_key);
        if (!rc && ca)
            rc = sockserv_config_set_tls_ca_file(config, ca);
        if (!rc && ca)
            rc = sockserv_config_set_tls_client_auth(config, SOCKSERV_TLS_CLIENT_AUTH_REQUIRED);
        if (rc) {
            report("tls", rc);
            sockserv_config_free(config);
            return 1;
        }
    }
    sockserv_config_set_reuse_port(config, reuse_port);
    if (proxy)
        sockserv_config_set_proxy_protocol(config, SOCKSERV_PROXY_REQUIRED);

    sockserv_server *server;
    rc = sockserv_server_new(addr, config, &server);
    sockserv_config_free(config); /* the server keeps its own copy */
    if (rc) {
        report(addr, rc);
        return 1;
    }
    rc = sockserv_server_set_handler(server, echo_handler, &verbose);
    if (rc) {
        report("handler", rc);
        sockserv_server_free(server);
        return 1;
    }

    char bound[SOCKSERV_ADDRSTRLEN];
    size_t needed;
    if (sockserv_server_local_addr(server, bound, sizeof bound, &needed) == SOCKSERV_OK) {
        printf("listening on %s\n", bound);
        fflush(stdout); /* whoever started us may be waiting for this line */
    }

    stopper.server = server;
    pthread_t stop_thread;
    if (pthread_create(&stop_thread, NULL, wait_for_stop_signal, &stopper) != 0) {
        fprintf(stderr, "echo_server: cannot start the signal thread\n");
        sockserv_server_free(server);
        return 1;
    }

    rc = sockserv_server_serve(server); /* accepts until shutdown */
    if (rc) {
        report("serve", rc);
        /* The stop thread still waits: hand it a (blocked) signal to end it. */
        pthread_kill(stop_thread, SIGTERM);
    }
    pthread_join(stop_thread, NULL);

    /* Closes live connections, joins every thread, removes a Unix socket file. */
    sockserv_server_free(server);
    return rc ? 1 : 0;
}
