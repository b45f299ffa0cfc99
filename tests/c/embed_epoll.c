/*
 * Embedded mode driven by an epoll loop of the program's own, with the
 * server's loop fd registered level-triggered ("lt") or edge-triggered
 * ("et", EPOLLET: woken once per new readiness, so everything the server
 * leaves undone must show as a timeout of 0): the scenarios of
 * embed_common.h. Run by tests/c_api/embedded.rs.
 */
#define _GNU_SOURCE
#include "embed_common.h"

#include <sys/epoll.h>

static int epfd = -1;
static int edge;

static void epoll_init(int fd)
{
    epfd = epoll_create1(EPOLL_CLOEXEC);
    REQUIRE(epfd >= 0);
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | (edge ? EPOLLET : 0);
    ev.data.fd = fd;
    REQUIRE(epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == 0);
}

static void epoll_wait_ms(int ms)
{
    struct epoll_event evs[4];
    int n = epoll_wait(epfd, evs, 4, ms);
    REQUIRE(n >= 0 || errno == EINTR);
}

static void epoll_done(void)
{
    close(epfd);
    epfd = -1;
}

int main(int argc, char **argv)
{
    if (argc != 2 || (strcmp(argv[1], "lt") != 0 && strcmp(argv[1], "et") != 0)) {
        fprintf(stderr, "usage: embed_epoll lt|et\n");
        return 2;
    }
    edge = strcmp(argv[1], "et") == 0;
    static const struct waiter lt = {"epoll-lt", epoll_init, epoll_wait_ms, epoll_done};
    static const struct waiter et = {"epoll-et", epoll_init, epoll_wait_ms, epoll_done};
    return embed_main(edge ? &et : &lt);
}
