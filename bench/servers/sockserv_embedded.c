/* sockserv's embedded mode through its C API: no sockserv thread at all;
 * this program's own epoll loop on its main thread watches the server's
 * descriptor (sockserv_server_loop_fd) and a signalfd for SIGTERM, waits
 * at most sockserv_server_loop_timeout_ms, and calls
 * sockserv_server_process, in which on_frame echoes each frame with
 * sockserv_conn_send (queued; the same turn writes them). The engine's
 * descriptor is watched edge-triggered, which the rule allows: after each
 * process, a timeout of 0 means "more is ready", so the next epoll_wait
 * does not sleep. Same contract as the other servers (-t is accepted and
 * ignored: the caller's loop is the only thread). */
#include "common.h"
#include "sockserv.h"

#include <sys/epoll.h>
#include <sys/signalfd.h>

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
    struct epoll_event ev, ready[4];
    size_t n;
    int ep, sfd, fd, ms = 0, stop = 0;
    parse_opts(argc, argv, &o);
    raise_nofile();
    check(sockserv_config_new(&cfg), "config");
    if (o.key) check(sockserv_config_set_auth_key(cfg, (const uint8_t *)o.key, strlen(o.key)), "key");
    /* The scale scenario holds 10,100 connections. */
    check(sockserv_config_set_max_connections(cfg, 20000), "max_connections");
    check(sockserv_config_set_backlog(cfg, 4096), "backlog");
    snprintf(addr, sizeof addr, "tcp://127.0.0.1:%d", o.port);
    check(sockserv_server_new(addr, cfg, &srv), "server");
    sockserv_config_free(cfg);
    check(sockserv_server_set_event_handlers(srv, NULL, on_frame, NULL, NULL), "handlers");
    check(sockserv_server_start_embedded(srv), "start_embedded");
    check(sockserv_server_loop_fd(srv, &fd), "loop_fd");
    check(sockserv_server_local_addr(srv, addr, sizeof addr, &n), "local_addr");

    block_term(&sigs);
    sigdelset(&sigs, SIGPIPE); /* stays blocked; only TERM and INT end the loop */
    if ((sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) die("signalfd");
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0) die("epoll_create1");
    ev.events = EPOLLIN | EPOLLET;
    ev.data.fd = fd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) die("epoll_ctl server");
    ev.events = EPOLLIN;
    ev.data.fd = sfd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev)) die("epoll_ctl signalfd");
    printf("listening %s\n", addr);
    fflush(stdout);

    while (!stop) {
        int i, got = epoll_wait(ep, ready, 4, ms);
        if (got < 0 && errno != EINTR) die("epoll_wait");
        for (i = 0; i < got; i++)
            if (ready[i].data.fd == sfd) stop = 1;
        if (stop) break;
        /* After every wake-up, readable or timed out alike. */
        check(sockserv_server_process(srv), "process");
        check(sockserv_server_loop_timeout_ms(srv, &ms), "loop_timeout_ms");
    }
    sockserv_server_shutdown(srv);
    sockserv_server_free(srv); /* closes every connection, on this thread */
    close(ep);
    close(sfd);
    return 0;
}
