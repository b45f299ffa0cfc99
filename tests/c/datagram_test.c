/*
 * The datagram C API, exercised from C: NULL and bad arguments, config
 * validation, echo servers over UDP (IPv4, IPv6) and Unix datagram sockets,
 * the maximum size and truncation, buffers too small, timeouts, sealed
 * datagrams (wrong key, garbage, replay) and their counters, serve and
 * shutdown. Run by tests/c_api.rs, also under valgrind.
 *
 * Usage: datagram_test TMPDIR   (Unix sockets are created in TMPDIR)
 *
 * Every check is counted; a failed one prints file:line, the expression
 * and the library's last error, and the program goes on, exiting 1 at the
 * end. Setup steps that later checks need stop the program at once. Every
 * wait is bounded (WAIT_MS); the harness also kills a hung run.
 */
#define _POSIX_C_SOURCE 200809L

#include "check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 10000

static const uint8_t KEY[] = "datagram key";

/* ------------------------------------------------------------------ */
/* Helpers (the checks are in check.h)                                 */

static uint64_t stat_of(const sockserv_dgram *sock, int stat)
{
    uint64_t value = UINT64_MAX;
    REQUIRE_OK(sockserv_dgram_stat(sock, stat, &value));
    return value;
}

/* Waits (bounded) until a socket counter reaches `want`. */
static int wait_stat(const sockserv_dgram *sock, int stat, uint64_t want)
{
    long long end = now_ms() + WAIT_MS;
    while (stat_of(sock, stat) != want && now_ms() < end)
        sleep_ms(5);
    return stat_of(sock, stat) == want;
}

static sockserv_config *new_config(const uint8_t *key, size_t key_len)
{
    sockserv_config *config;
    REQUIRE_OK(sockserv_config_new(&config));
    if (key)
        REQUIRE_OK(sockserv_config_set_auth_key(config, key, key_len));
    REQUIRE_OK(sockserv_config_set_io_timeout_ms(config, WAIT_MS));
    return config;
}

/* ------------------------------------------------------------------ */
/* An echo server whose handler also records what it saw.              */

struct echo_state {
    pthread_mutex_t lock;
    int calls;
    int failures;
    char last_from[SOCKSERV_ADDRSTRLEN];
};

static void echo_state_init(struct echo_state *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_init(&st->lock, NULL);
}

static void echo(void *userdata, sockserv_dgram *sock, const uint8_t *data, size_t len,
                 const char *from)
{
    struct echo_state *st = userdata;
    int bad = 0;
    uint8_t scratch[4];
    size_t n;
    /* The lent socket: receiving is refused, free is ignored. */
    bad += sockserv_dgram_recv(sock, scratch, sizeof scratch, &n) != SOCKSERV_ERR_INVALID_STATE;
    sockserv_dgram_free(sock);
    bad += from == NULL || data == NULL;
    if (len == 4 && memcmp(data, "stop", 4) == 0) {
        /* Not answered: the test shuts the server down from here. */
    } else if (sockserv_dgram_send_to(sock, from, data, len) != SOCKSERV_OK) {
        bad++;
    }
    pthread_mutex_lock(&st->lock);
    st->calls++;
    st->failures += bad;
    snprintf(st->last_from, sizeof st->last_from, "%s", from ? from : "");
    pthread_mutex_unlock(&st->lock);
}

static sockserv_dgram_server *echo_server(const char *addr, const sockserv_config *config,
                                          struct echo_state *st, char *bound, size_t bound_len)
{
    sockserv_dgram_server *server;
    size_t needed;
    REQUIRE_OK(sockserv_dgram_server_new(addr, config, &server));
    REQUIRE_OK(sockserv_dgram_server_set_handler(server, echo, st));
    REQUIRE_OK(sockserv_dgram_server_local_addr(server, bound, bound_len, &needed));
    REQUIRE_OK(sockserv_dgram_server_start(server));
    return server;
}

/* A plain POSIX UDP socket, for raw datagrams; the port of "udp://IP:PORT". */
static int raw_udp(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    REQUIRE(fd >= 0);
    return fd;
}

static struct sockaddr_in udp_target(const char *addr)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const char *colon = strrchr(addr, ':');
    REQUIRE(colon != NULL);
    sin.sin_port = htons((uint16_t)atoi(colon + 1));
    return sin;
}

static void raw_send(int fd, const char *addr, const void *data, size_t len)
{
    struct sockaddr_in to = udp_target(addr);
    REQUIRE(sendto(fd, data, len, 0, (const struct sockaddr *)&to, sizeof to) == (ssize_t)len);
}

/* ------------------------------------------------------------------ */
/* NULLs and bad arguments                                             */

static void test_null_parameters(void)
{
    sockserv_config *config = new_config(NULL, 0);
    sockserv_dgram *sock = UNTOUCHED;
    sockserv_dgram_server *server = UNTOUCHED;
    uint8_t buf[16] = {0};
    char text[SOCKSERV_ADDRSTRLEN];
    size_t len, needed;
    uint64_t value;
    uint32_t ms;
    int fd;

    EXPECT_RC(sockserv_config_set_max_datagram_size(NULL, 100), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("config is NULL");
    EXPECT_RC(sockserv_config_set_datagram_window_ms(NULL, 100), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_datagram_replay_capacity(NULL, 100),
              SOCKSERV_ERR_NULL_PARAMETER);

    EXPECT_RC(sockserv_dgram_open(NULL, config, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("sock_out is NULL");
    EXPECT_RC(sockserv_dgram_connect(NULL, config, &sock), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("addr is NULL");
    CHECK(sock == UNTOUCHED);
    EXPECT_RC(sockserv_dgram_connect("udp://127.0.0.1:9", config, NULL),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_send_to(NULL, "udp://127.0.0.1:9", buf, 1),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("sock is NULL");
    EXPECT_RC(sockserv_dgram_send(NULL, buf, 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_recv_from(NULL, buf, sizeof buf, &len, text, sizeof text, &needed),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_recv(NULL, buf, sizeof buf, &len), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_local_addr(NULL, text, sizeof text, &needed),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_fd(NULL, &fd), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_set_timeout_ms(NULL, 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_get_timeout_ms(NULL, &ms), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_stat(NULL, SOCKSERV_DGRAM_STAT_SENT, &value),
              SOCKSERV_ERR_NULL_PARAMETER);

    EXPECT_RC(sockserv_dgram_server_new(NULL, config, &server), SOCKSERV_ERR_NULL_PARAMETER);
    CHECK(server == UNTOUCHED);
    EXPECT_RC(sockserv_dgram_server_new("udp://127.0.0.1:0", config, NULL),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("server_out is NULL");
    EXPECT_RC(sockserv_dgram_server_set_handler(NULL, echo, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("server is NULL");
    EXPECT_RC(sockserv_dgram_server_socket(NULL, &sock), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_server_local_addr(NULL, text, sizeof text, &needed),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_server_serve(NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_server_start(NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_server_shutdown(NULL), SOCKSERV_ERR_NULL_PARAMETER);

    /* With a live socket: each pointer argument in turn. */
    REQUIRE_OK(sockserv_dgram_open("udp://127.0.0.1:0", config, &sock));
    EXPECT_RC(sockserv_dgram_send_to(sock, NULL, buf, 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("to is NULL");
    EXPECT_RC(sockserv_dgram_send_to(sock, "udp://127.0.0.1:9", NULL, 1),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("data is NULL");
    EXPECT_RC(sockserv_dgram_recv_from(sock, NULL, 1, &len, text, sizeof text, &needed),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_recv_from(sock, buf, sizeof buf, NULL, text, sizeof text, &needed),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_recv_from(sock, buf, sizeof buf, &len, NULL, 1, &needed),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_recv_from(sock, buf, sizeof buf, &len, text, sizeof text, NULL),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_recv(sock, buf, sizeof buf, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_local_addr(sock, text, sizeof text, NULL),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_fd(sock, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_get_timeout_ms(sock, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_dgram_stat(sock, SOCKSERV_DGRAM_STAT_SENT, NULL),
              SOCKSERV_ERR_NULL_PARAMETER);
    value = 7;
    EXPECT_RC(sockserv_dgram_stat(sock, 99, &value), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_DETAIL("unknown datagram stat 99");
    CHECK(value == 7);
    /* Nothing was sent or received by any of that. */
    CHECK(stat_of(sock, SOCKSERV_DGRAM_STAT_SENT) == 0);
    sockserv_dgram_free(sock);

    sockserv_dgram_free(NULL);
    sockserv_dgram_server_free(NULL);
    sockserv_config_free(config);
}

static void test_config_and_addresses(void)
{
    sockserv_config *config = new_config(NULL, 0);
    sockserv_dgram *sock = UNTOUCHED;

    EXPECT_RC(sockserv_config_set_max_datagram_size(config, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_max_datagram_size(config, SOCKSERV_MAX_DATAGRAM_SIZE + 1),
              SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_DETAIL("65507");
    EXPECT_RC(sockserv_config_set_max_datagram_size(config, SOCKSERV_MAX_DATAGRAM_SIZE),
              SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_max_datagram_size(config, SOCKSERV_DEFAULT_DATAGRAM_SIZE),
              SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_datagram_window_ms(config, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_datagram_window_ms(config, 1000), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_datagram_replay_capacity(config, 0),
              SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_datagram_replay_capacity(config, 10), SOCKSERV_OK);
    CHECK(SOCKSERV_DATAGRAM_OVERHEAD == 57);

    const char *bad[] = {"", "udp://", "udp://127.0.0.1", "udp://[::1:5", "tcp://127.0.0.1:0",
                         "unix:///tmp/x", "unixgram://"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EXPECT_RC(sockserv_dgram_open(bad[i], config, &sock), SOCKSERV_ERR_INVALID_ADDRESS);
        CHECK(sock == UNTOUCHED);
        sockserv_dgram_server *server = UNTOUCHED;
        EXPECT_RC(sockserv_dgram_server_new(bad[i], config, &server),
                  SOCKSERV_ERR_INVALID_ADDRESS);
        CHECK(server == UNTOUCHED);
    }
    /* And the other way round: a stream server takes no datagram address. */
    sockserv_server *stream = UNTOUCHED;
    EXPECT_RC(sockserv_server_new("udp://127.0.0.1:0", config, &stream),
              SOCKSERV_ERR_INVALID_ADDRESS);
    EXPECT_DETAIL("sockserv_dgram_");

    /* Opened with NULL: no address until the first send. */
    REQUIRE_OK(sockserv_dgram_open(NULL, NULL, &sock));
    char text[SOCKSERV_ADDRSTRLEN];
    size_t needed = 0;
    int fd = -1;
    uint8_t buf[8] = {0};
    size_t len;
    EXPECT_RC(sockserv_dgram_local_addr(sock, text, sizeof text, &needed),
              SOCKSERV_ERR_INVALID_STATE);
    EXPECT_RC(sockserv_dgram_fd(sock, &fd), SOCKSERV_ERR_INVALID_STATE);
    CHECK(fd == -1);
    EXPECT_RC(sockserv_dgram_recv(sock, buf, sizeof buf, &len), SOCKSERV_ERR_INVALID_STATE);
    EXPECT_RC(sockserv_dgram_send(sock, buf, 1), SOCKSERV_ERR_INVALID_STATE);
    EXPECT_RC(sockserv_dgram_send_to(sock, "udp://127.0.0.1:9", buf, 1), SOCKSERV_OK);
    EXPECT_RC(sockserv_dgram_local_addr(sock, text, sizeof text, &needed), SOCKSERV_OK);
    CHECK(strncmp(text, "udp://0.0.0.0:", 14) == 0 && needed == strlen(text) + 1);
    EXPECT_RC(sockserv_dgram_fd(sock, &fd), SOCKSERV_OK);
    CHECK(fd >= 0);
    /* Family fixed by the first send. */
    EXPECT_RC(sockserv_dgram_send_to(sock, "udp://[::1]:9", buf, 1),
              SOCKSERV_ERR_INVALID_ADDRESS);
    EXPECT_DETAIL("another address family");
    /* Bound but not connected: send needs an address. */
    EXPECT_RC(sockserv_dgram_send(sock, buf, 1), SOCKSERV_ERR_INVALID_STATE);
    sockserv_dgram_free(sock);
    sockserv_config_free(config);
}

/* ------------------------------------------------------------------ */
/* Echo over each kind of address                                      */

static void test_echo(const char *listen_addr, const uint8_t *key, size_t key_len)
{
    printf("# echo on %s %s\n", listen_addr, key ? "with a key" : "without a key");
    sockserv_config *config = new_config(key, key_len);
    struct echo_state st;
    echo_state_init(&st);
    char addr[SOCKSERV_ADDRSTRLEN];
    sockserv_dgram_server *server = echo_server(listen_addr, config, &st, addr, sizeof addr);
    CHECK(strncmp(addr, listen_addr, 6) == 0);
    CHECK(strcmp(addr + strlen(addr) - 2, ":0") != 0);

    /* Connect-less, created by its first send. */
    sockserv_dgram *client;
    REQUIRE_OK(sockserv_dgram_open(NULL, config, &client));
    const char *payloads[] = {"hello", "", "a somewhat longer datagram payload"};
    for (size_t i = 0; i < 3; i++) {
        size_t plen = strlen(payloads[i]);
        uint8_t back[64];
        char from[SOCKSERV_ADDRSTRLEN];
        size_t len = SIZE_MAX, from_needed = 0;
        EXPECT_RC(sockserv_dgram_send_to(client, addr, (const uint8_t *)payloads[i], plen),
                  SOCKSERV_OK);
        if (EXPECT_RC(sockserv_dgram_recv_from(client, back, sizeof back, &len, from,
                                               sizeof from, &from_needed),
                      SOCKSERV_OK)) {
            CHECK(len == plen && memcmp(back, payloads[i], plen) == 0);
            CHECK(strcmp(from, addr) == 0);
            CHECK(from_needed == strlen(addr) + 1);
        }
    }
    /* The server saw the client's address (the port, for a client bound to
       the unspecified address; the name, for an autobound Unix client). */
    char mine[SOCKSERV_ADDRSTRLEN];
    size_t needed;
    REQUIRE_OK(sockserv_dgram_local_addr(client, mine, sizeof mine, &needed));
    pthread_mutex_lock(&st.lock);
    const char *theirs = st.last_from;
    if (strncmp(mine, "udp://", 6) == 0)
        CHECK(strcmp(strrchr(mine, ':'), strrchr(theirs, ':')) == 0);
    else
        CHECK(strncmp(mine, "unixgram://@", 12) == 0 && strcmp(mine, theirs) == 0);
    pthread_mutex_unlock(&st.lock);

    /* Connected. */
    sockserv_dgram *connected;
    REQUIRE_OK(sockserv_dgram_connect(addr, config, &connected));
    uint8_t back[16];
    size_t len = 0;
    EXPECT_RC(sockserv_dgram_send(connected, (const uint8_t *)"conn", 4), SOCKSERV_OK);
    EXPECT_RC(sockserv_dgram_recv(connected, back, sizeof back, &len), SOCKSERV_OK);
    CHECK(len == 4 && memcmp(back, "conn", 4) == 0);

    sockserv_dgram *server_sock = NULL;
    REQUIRE_OK(sockserv_dgram_server_socket(server, &server_sock));
    CHECK(wait_stat(server_sock, SOCKSERV_DGRAM_STAT_RECEIVED, 4));
    CHECK(wait_stat(server_sock, SOCKSERV_DGRAM_STAT_SENT, 4));
    CHECK(stat_of(client, SOCKSERV_DGRAM_STAT_SENT) == 3);
    CHECK(stat_of(client, SOCKSERV_DGRAM_STAT_RECEIVED) == 3);
    pthread_mutex_lock(&st.lock);
    CHECK(st.calls == 4 && st.failures == 0);
    pthread_mutex_unlock(&st.lock);

    sockserv_dgram_free(connected);
    sockserv_dgram_free(client);
    sockserv_dgram_server_free(server);
    sockserv_config_free(config);
}

static void test_unix_files(const char *tmpdir)
{
    char path[256], addr[300];
    snprintf(path, sizeof path, "%s/files.sock", tmpdir);
    snprintf(addr, sizeof addr, "unixgram://%s", path);
    sockserv_config *config = new_config(NULL, 0);
    sockserv_dgram_server *server, *second = UNTOUCHED;
    REQUIRE_OK(sockserv_dgram_server_new(addr, config, &server));
    CHECK(access(path, F_OK) == 0);
    EXPECT_RC(sockserv_dgram_server_new(addr, config, &second), SOCKSERV_ERR_ADDRESS_IN_USE);
    CHECK(second == UNTOUCHED);
    sockserv_dgram_server_free(server);
    CHECK(access(path, F_OK) != 0); /* removed */

    /* Nobody bound there now: refused, for a send and for a connect. */
    sockserv_dgram *sock = UNTOUCHED;
    EXPECT_RC(sockserv_dgram_connect(addr, config, &sock), SOCKSERV_ERR_CONNECTION_REFUSED);
    CHECK(sock == UNTOUCHED);
    REQUIRE_OK(sockserv_dgram_open(NULL, config, &sock));
    EXPECT_RC(sockserv_dgram_send_to(sock, addr, (const uint8_t *)"x", 1),
              SOCKSERV_ERR_CONNECTION_REFUSED);
    sockserv_dgram_free(sock);

    /* A client bound to a path removes its file when freed. */
    REQUIRE_OK(sockserv_dgram_open(addr, config, &sock));
    CHECK(access(path, F_OK) == 0);
    sockserv_dgram_free(sock);
    CHECK(access(path, F_OK) != 0);
    sockserv_config_free(config);
}

/* ------------------------------------------------------------------ */
/* Sizes, truncation, buffers, timeouts                                */

static void test_sizes_and_timeouts(void)
{
    printf("# sizes and timeouts\n");
    sockserv_config *config = new_config(NULL, 0);
    REQUIRE_OK(sockserv_config_set_max_datagram_size(config, 100));
    sockserv_dgram *receiver, *sender;
    char addr[SOCKSERV_ADDRSTRLEN];
    size_t needed;
    REQUIRE_OK(sockserv_dgram_open("udp://127.0.0.1:0", config, &receiver));
    REQUIRE_OK(sockserv_dgram_local_addr(receiver, addr, sizeof addr, &needed));
    REQUIRE_OK(sockserv_dgram_open(NULL, config, &sender));
    uint8_t big[200];
    memset(big, 'b', sizeof big);

    /* Sending over the maximum: nothing leaves. */
    EXPECT_RC(sockserv_dgram_send_to(sender, addr, big, 101), SOCKSERV_ERR_DATAGRAM_TOO_LARGE);
    EXPECT_DETAIL("101 bytes");
    EXPECT_DETAIL("100 bytes");
    CHECK(stat_of(sender, SOCKSERV_DGRAM_STAT_SENT) == 0);

    /* Receiving over the maximum (from a raw socket): an error with both
       sizes, the datagram discarded, and the next one comes. */
    int raw = raw_udp();
    raw_send(raw, addr, big, 150);
    raw_send(raw, addr, "next", 4);
    uint8_t buf[100];
    char from[SOCKSERV_ADDRSTRLEN];
    size_t len = 12345, from_needed = 12345;
    EXPECT_RC(sockserv_dgram_recv_from(receiver, buf, sizeof buf, &len, from, sizeof from,
                                       &from_needed),
              SOCKSERV_ERR_DATAGRAM_TOO_LARGE);
    EXPECT_DETAIL("datagram of 150 bytes");
    EXPECT_DETAIL("maximum datagram size of 100 bytes");
    CHECK(len == 12345 && from_needed == 12345);
    EXPECT_RC(sockserv_dgram_recv_from(receiver, buf, sizeof buf, &len, from, sizeof from,
                                       &from_needed),
              SOCKSERV_OK);
    CHECK(len == 4 && memcmp(buf, "next", 4) == 0);
    CHECK(stat_of(receiver, SOCKSERV_DGRAM_STAT_TOO_LARGE) == 1);

    /* A buffer too small: the sizes needed, and the datagram stays queued. */
    EXPECT_RC(sockserv_dgram_send_to(sender, addr, big, 100), SOCKSERV_OK);
    uint8_t small[10];
    EXPECT_RC(sockserv_dgram_recv_from(receiver, small, sizeof small, &len, from, sizeof from,
                                       &from_needed),
              SOCKSERV_ERR_INSUFFICIENT_SIZE);
    CHECK(len == 100 && from_needed > 10);
    EXPECT_DETAIL("the datagram is 100 bytes, the buffer holds 10");
    EXPECT_RC(sockserv_dgram_recv(receiver, small, sizeof small, &len),
              SOCKSERV_ERR_INSUFFICIENT_SIZE);
    CHECK(len == 100);
    char tiny[4];
    EXPECT_RC(sockserv_dgram_recv_from(receiver, buf, sizeof buf, &len, tiny, sizeof tiny,
                                       &from_needed),
              SOCKSERV_ERR_INSUFFICIENT_SIZE);
    EXPECT_DETAIL("the sender's address takes");
    size_t want_from = from_needed;
    /* NULL with 0 asks for the sizes. */
    EXPECT_RC(sockserv_dgram_recv_from(receiver, NULL, 0, &len, NULL, 0, &from_needed),
              SOCKSERV_ERR_INSUFFICIENT_SIZE);
    CHECK(len == 100 && from_needed == want_from);
    EXPECT_RC(sockserv_dgram_recv_from(receiver, buf, sizeof buf, &len, from, sizeof from,
                                       &from_needed),
              SOCKSERV_OK);
    CHECK(len == 100 && buf[99] == 'b' && strlen(from) + 1 == want_from);
    CHECK(stat_of(receiver, SOCKSERV_DGRAM_STAT_RECEIVED) == 2);

    /* Timeouts, from the config and set per socket. */
    uint32_t ms = 0;
    EXPECT_RC(sockserv_dgram_get_timeout_ms(receiver, &ms), SOCKSERV_OK);
    CHECK(ms == WAIT_MS);
    EXPECT_RC(sockserv_dgram_set_timeout_ms(receiver, 100), SOCKSERV_OK);
    EXPECT_RC(sockserv_dgram_get_timeout_ms(receiver, &ms), SOCKSERV_OK);
    CHECK(ms == 100);
    long long started = now_ms();
    EXPECT_RC(sockserv_dgram_recv(receiver, buf, sizeof buf, &len), SOCKSERV_ERR_TIMED_OUT);
    long long took = now_ms() - started;
    CHECK(took >= 100 && took < 3000);
    EXPECT_RC(sockserv_dgram_set_timeout_ms(receiver, 0), SOCKSERV_OK);
    EXPECT_RC(sockserv_dgram_get_timeout_ms(receiver, &ms), SOCKSERV_OK);
    CHECK(ms == 0);

    close(raw);
    sockserv_dgram_free(sender);
    sockserv_dgram_free(receiver);
    sockserv_config_free(config);
}

/* ------------------------------------------------------------------ */
/* Sealed datagrams                                                    */

static void test_sealed(void)
{
    printf("# sealed datagrams\n");
    sockserv_config *config = new_config(KEY, sizeof KEY - 1);
    struct echo_state st;
    echo_state_init(&st);
    char addr[SOCKSERV_ADDRSTRLEN];
    sockserv_dgram_server *server = echo_server("udp://127.0.0.1:0", config, &st, addr,
                                                sizeof addr);
    sockserv_dgram *server_sock;
    REQUIRE_OK(sockserv_dgram_server_socket(server, &server_sock));

    /* A wrong key: dropped at the server, counted; no reply. */
    sockserv_config *wrong = new_config((const uint8_t *)"wrong", 5);
    REQUIRE_OK(sockserv_config_set_io_timeout_ms(wrong, 200));
    sockserv_dgram *intruder;
    REQUIRE_OK(sockserv_dgram_open(NULL, wrong, &intruder));
    uint8_t buf[256];
    size_t len;
    EXPECT_RC(sockserv_dgram_send_to(intruder, addr, (const uint8_t *)"let me in", 9),
              SOCKSERV_OK);
    EXPECT_RC(sockserv_dgram_recv(intruder, buf, sizeof buf, &len), SOCKSERV_ERR_TIMED_OUT);
    CHECK(wait_stat(server_sock, SOCKSERV_DGRAM_STAT_BAD_TAG, 1));

    /* Garbage: too short. */
    int raw = raw_udp();
    raw_send(raw, addr, "junk", 4);
    CHECK(wait_stat(server_sock, SOCKSERV_DGRAM_STAT_TOO_SHORT, 1));

    /* A replay: a sealed datagram captured by a receiver without a key
       (which sees the raw bytes), then sent twice from a raw socket. */
    sockserv_dgram *capture, *sealer;
    sockserv_config *plain = new_config(NULL, 0);
    char capture_addr[SOCKSERV_ADDRSTRLEN];
    size_t needed;
    REQUIRE_OK(sockserv_dgram_open("udp://127.0.0.1:0", plain, &capture));
    REQUIRE_OK(sockserv_dgram_local_addr(capture, capture_addr, sizeof capture_addr, &needed));
    REQUIRE_OK(sockserv_dgram_open(NULL, config, &sealer));
    EXPECT_RC(sockserv_dgram_send_to(sealer, capture_addr, (const uint8_t *)"once", 4),
              SOCKSERV_OK);
    EXPECT_RC(sockserv_dgram_recv(capture, buf, sizeof buf, &len), SOCKSERV_OK);
    CHECK(len == SOCKSERV_DATAGRAM_OVERHEAD + 4 && buf[0] == 1);
    CHECK(memcmp(buf + 25, "once", 4) == 0);
    raw_send(raw, addr, buf, len);
    raw_send(raw, addr, buf, len);
    CHECK(wait_stat(server_sock, SOCKSERV_DGRAM_STAT_REPLAYED, 1));
    CHECK(wait_stat(server_sock, SOCKSERV_DGRAM_STAT_RECEIVED, 1));

    /* A wrong version byte (the tag then fails too, but the version is
       checked first). */
    buf[0] = 2;
    raw_send(raw, addr, buf, len);
    CHECK(wait_stat(server_sock, SOCKSERV_DGRAM_STAT_BAD_VERSION, 1));

    /* The right key still gets through, after all that. */
    sockserv_dgram *client;
    REQUIRE_OK(sockserv_dgram_open(NULL, config, &client));
    EXPECT_RC(sockserv_dgram_send_to(client, addr, (const uint8_t *)"fine", 4), SOCKSERV_OK);
    EXPECT_RC(sockserv_dgram_recv(client, buf, sizeof buf, &len), SOCKSERV_OK);
    CHECK(len == 4 && memcmp(buf, "fine", 4) == 0);
    CHECK(stat_of(server_sock, SOCKSERV_DGRAM_STAT_TOO_OLD) == 0);
    CHECK(stat_of(server_sock, SOCKSERV_DGRAM_STAT_TOO_NEW) == 0);
    CHECK(wait_stat(server_sock, SOCKSERV_DGRAM_STAT_RECEIVED, 2));

    close(raw);
    sockserv_dgram_free(client);
    sockserv_dgram_free(sealer);
    sockserv_dgram_free(capture);
    sockserv_dgram_free(intruder);
    sockserv_dgram_server_free(server);
    sockserv_config_free(plain);
    sockserv_config_free(wrong);
    sockserv_config_free(config);
}

/* ------------------------------------------------------------------ */
/* serve on a thread of ours, shutdown from the handler and from here  */

struct serve_args {
    sockserv_dgram_server *server;
    sockserv_result rc;
};

static void *serve_thread(void *arg)
{
    struct serve_args *a = arg;
    a->rc = sockserv_dgram_server_serve(a->server);
    return NULL;
}

static void shutdown_on_stop(void *userdata, sockserv_dgram *sock, const uint8_t *data,
                             size_t len, const char *from)
{
    (void)sock;
    (void)from;
    if (len == 4 && memcmp(data, "stop", 4) == 0)
        sockserv_dgram_server_shutdown(userdata);
}

static void test_serve_and_shutdown(void)
{
    printf("# serve and shutdown\n");
    sockserv_config *config = new_config(NULL, 0);
    char addr[SOCKSERV_ADDRSTRLEN];
    size_t needed;

    /* Shut down by its own handler. */
    sockserv_dgram_server *server;
    REQUIRE_OK(sockserv_dgram_server_new("udp://[::1]:0", config, &server));
    REQUIRE_OK(sockserv_dgram_server_set_handler(server, shutdown_on_stop, server));
    REQUIRE_OK(sockserv_dgram_server_local_addr(server, addr, sizeof addr, &needed));
    struct serve_args args = {server, SOCKSERV_ERR_PANIC};
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, serve_thread, &args) == 0);
    sockserv_dgram *client;
    REQUIRE_OK(sockserv_dgram_open(NULL, config, &client));
    EXPECT_RC(sockserv_dgram_send_to(client, addr, (const uint8_t *)"stop", 4), SOCKSERV_OK);
    pthread_join(thread, NULL);
    CHECK(args.rc == SOCKSERV_OK);
    EXPECT_RC(sockserv_dgram_server_start(server), SOCKSERV_ERR_SHUTDOWN);
    EXPECT_RC(sockserv_dgram_server_set_handler(server, NULL, NULL), SOCKSERV_ERR_INVALID_STATE);
    sockserv_dgram_server_free(server);

    /* Shut down from another thread: serve returns at once. */
    REQUIRE_OK(sockserv_dgram_server_new("udp://127.0.0.1:0", config, &server));
    REQUIRE_OK(sockserv_dgram_server_set_handler(server, NULL, NULL));
    args.server = server;
    args.rc = SOCKSERV_ERR_PANIC;
    REQUIRE(pthread_create(&thread, NULL, serve_thread, &args) == 0);
    sleep_ms(50);
    long long started = now_ms();
    EXPECT_RC(sockserv_dgram_server_shutdown(server), SOCKSERV_OK);
    pthread_join(thread, NULL);
    CHECK(now_ms() - started < 2000);
    CHECK(args.rc == SOCKSERV_OK);
    EXPECT_RC(sockserv_dgram_server_serve(server), SOCKSERV_ERR_SHUTDOWN);
    sockserv_dgram_server_free(server);

    /* Started twice. */
    REQUIRE_OK(sockserv_dgram_server_new("udp://127.0.0.1:0", config, &server));
    EXPECT_RC(sockserv_dgram_server_start(server), SOCKSERV_OK);
    EXPECT_RC(sockserv_dgram_server_start(server), SOCKSERV_ERR_INVALID_STATE);
    sockserv_dgram_server_free(server); /* running: stops and joins */

    sockserv_dgram_free(client);
    sockserv_config_free(config);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: datagram_test TMPDIR\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    char unix_addr[300];
    snprintf(unix_addr, sizeof unix_addr, "unixgram://%s/dgram_test.sock", argv[1]);

    printf("# NULL parameters, config, addresses\n");
    test_null_parameters();
    test_config_and_addresses();
    test_echo("udp://127.0.0.1:0", NULL, 0);
    test_echo("udp://[::1]:0", NULL, 0);
    test_echo(unix_addr, NULL, 0);
    test_echo("udp://127.0.0.1:0", KEY, sizeof KEY - 1);
    test_echo("udp://[::1]:0", KEY, sizeof KEY - 1);
    test_echo(unix_addr, KEY, sizeof KEY - 1);
    test_unix_files(argv[1]);
    test_sizes_and_timeouts();
    test_sealed();
    test_serve_and_shutdown();

    printf("datagram_test: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
