/*
 * echo_server: a sockserv server that sends every frame back.
 *
 *     SOCKSERV_KEY=secret ./echo_server tcp://127.0.0.1:9000
 *     ./echo_server -k secret unix:///tmp/echo.sock
 *
 * Clients must prove they know the key (HMAC-SHA256 challenge-response)
 * before the handler sees them. Once bound, the server prints one line,
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
 * Runs on a thread of its own for each authenticated connection. `conn` is
 * lent by the server, which closes it when we return.
 */
static void echo_handler(void *userdata, sockserv_conn *conn)
{
    (void)userdata;
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
    fprintf(stderr, "usage: echo_server [-k KEY] ADDR   (or the key in SOCKSERV_KEY)\n"
                    "  e.g. echo_server tcp://127.0.0.1:9000\n");
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
    if (optind != argc - 1)
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

    sockserv_config *config;
    sockserv_result rc = sockserv_config_new(&config);
    if (rc) {
        report("config", rc);
        return 1;
    }
    if (key && *key) {
        rc = sockserv_config_set_auth_key(config, (const uint8_t *)key, strlen(key));
        if (rc) {
            report("key", rc);
            sockserv_config_free(config);
            return 1;
        }
    } else {
        fprintf(stderr, "echo_server: no key (-k or SOCKSERV_KEY): anyone may connect\n");
    }

    sockserv_server *server;
    rc = sockserv_server_new(addr, config, &server);
    sockserv_config_free(config); /* the server keeps its own copy */
    if (rc) {
        report(addr, rc);
        return 1;
    }
    rc = sockserv_server_set_handler(server, echo_handler, NULL);
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
