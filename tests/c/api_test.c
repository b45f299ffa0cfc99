/*
 * The C API, exercised from C: argument checking, error reporting, config
 * validation, HMAC, and servers and clients in one process over TCP (IPv4,
 * IPv6) and Unix sockets. Run by tests/c_api.rs, also under valgrind.
 *
 * Usage: api_test TMPDIR   (Unix sockets are created in TMPDIR)
 *
 * Every check is counted; a failed one prints file:line, the expression
 * and the library's last error, and the program goes on, exiting 1 at the
 * end. Setup steps that later checks need stop the program at once.
 * Every wait is bounded (WAIT_MS); the harness also kills a hung run.
 */
#define _POSIX_C_SOURCE 200809L

/* First, to show that the header stands on its own. */
#include "check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Long enough for valgrind on a busy machine, short enough to fail fast. */
#define WAIT_MS 10000

static const uint8_t KEY[] = "correct horse battery staple";
static const uint8_t WRONG_KEY[] = "incorrect horse";

/* ------------------------------------------------------------------ */
/* Helpers (the checks are in check.h)                                                             */

static sockserv_config *config_with_key(const uint8_t *key, size_t len)
{
    sockserv_config *config;
    REQUIRE_OK(sockserv_config_new(&config));
    REQUIRE_OK(sockserv_config_set_auth_key(config, key, len));
    /* A broken handshake fails in seconds, not the default 10 s. */
    REQUIRE_OK(sockserv_config_set_handshake_timeout_ms(config, 5000));
    return config;
}

static uint64_t stat_of(const sockserv_server *server, int stat)
{
    uint64_t value = UINT64_MAX;
    REQUIRE_OK(sockserv_server_stat(server, stat, &value));
    return value;
}

/* Waits (bounded) until a server counter reaches `want`. */
static int wait_stat(const sockserv_server *server, int stat, uint64_t want)
{
    long long end = now_ms() + WAIT_MS;
    while (stat_of(server, stat) != want && now_ms() < end)
        sleep_ms(5);
    return stat_of(server, stat) == want;
}

/* What the refusal log received (sockserv_set_refusal_log). */
struct refusals {
    pthread_mutex_t lock;
    int count;
    sockserv_result code;
    char detail[512];
};

static void log_refusal(void *userdata, const char *peer, sockserv_result code, const char *detail)
{
    struct refusals *r = userdata;
    pthread_mutex_lock(&r->lock);
    if (r->count++ == 0 && peer && detail) {
        r->code = code;
        snprintf(r->detail, sizeof r->detail, "%s", detail);
    }
    pthread_mutex_unlock(&r->lock);
}

static int refusals_seen(struct refusals *r)
{
    pthread_mutex_lock(&r->lock);
    int n = r->count;
    pthread_mutex_unlock(&r->lock);
    return n;
}

/* Sends `len` bytes and checks that the same bytes come back (borrowed recv). */
static int roundtrip(const sockserv_conn *conn, const uint8_t *data, size_t len)
{
    const uint8_t *back = NULL;
    size_t back_len = SIZE_MAX;
    if (!EXPECT_RC(sockserv_conn_send(conn, data, len), SOCKSERV_OK))
        return 0;
    if (!EXPECT_RC(sockserv_conn_recv(conn, &back, &back_len), SOCKSERV_OK))
        return 0;
    return CHECK(back != NULL) && CHECK(back_len == len) &&
           CHECK(len == 0 || memcmp(back, data, len) == 0);
}

static int fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}


/* ------------------------------------------------------------------ */
/* The server side: an echo handler that also checks its lent handle.  */

struct server_state {
    pthread_mutex_t lock;
    int handler_calls;
    int handler_failures;
    int refuse; /* the verify callback refuses peers while set */
    char verified_peer[SOCKSERV_ADDRSTRLEN];
};

static void server_state_init(struct server_state *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_init(&st->lock, NULL);
}

/*
 * Echoes frames until the peer closes; the frame "close" makes it return,
 * so the server closes the connection.
 */
static void echo_handler(void *userdata, sockserv_conn *conn)
{
    struct server_state *st = userdata;
    int bad = 0;
    /* A lent handle: userdata starts NULL and works; free is ignored. */
    bad += sockserv_conn_get_userdata(conn) != NULL;
    bad += sockserv_conn_set_userdata(conn, st) != SOCKSERV_OK;
    bad += sockserv_conn_get_userdata(conn) != st;
    sockserv_conn_free(conn);
    for (;;) {
        const uint8_t *data;
        size_t len;
        sockserv_result rc = sockserv_conn_recv(conn, &data, &len);
        if (rc == SOCKSERV_ERR_CLOSED || rc == SOCKSERV_ERR_SHUTDOWN)
            break;
        if (rc) {
            char why[512];
            sockserv_last_error(why, sizeof why);
            fprintf(stderr, "handler: receive: %s (%s)\n", sockserv_strerror(rc), why);
            bad++;
            break;
        }
        if (len == 5 && memcmp(data, "close", 5) == 0)
            break;
        if (sockserv_conn_send(conn, data, len) != SOCKSERV_OK)
            break; /* the client may be gone already: not a handler fault */
    }
    pthread_mutex_lock(&st->lock);
    st->handler_calls++;
    st->handler_failures += bad;
    pthread_mutex_unlock(&st->lock);
}

static bool verify_peer(void *userdata, const char *peer_addr)
{
    struct server_state *st = userdata;
    pthread_mutex_lock(&st->lock);
    snprintf(st->verified_peer, sizeof st->verified_peer, "%s", peer_addr);
    bool accept = !st->refuse;
    pthread_mutex_unlock(&st->lock);
    return accept;
}

/* ------------------------------------------------------------------ */
/* Version, strerror, last_error                                       */

static void test_version(void)
{
    char expected[64];
    snprintf(expected, sizeof expected, "%d.%d.%d", SOCKSERV_VERSION_MAJOR, SOCKSERV_VERSION_MINOR,
             SOCKSERV_VERSION_PATCH);
    CHECK(sockserv_version() != NULL);
    CHECK(strcmp(sockserv_version(), expected) == 0);
}

static void test_strerror(void)
{
    const char *unknown = sockserv_strerror(-1);
    CHECK(unknown != NULL && strcmp(unknown, "unknown sockserv result code") == 0);
    /* The known codes run from 0 up to the first unknown one; counted, not
       hard-coded, so codes added later are covered too. */
    int count = 0;
    while (count < 1000 && strcmp(sockserv_strerror(count), unknown) != 0)
        count++;
    CHECK(count > SOCKSERV_ERR_PANIC);
    for (int code = 0; code < count; code++) {
        const char *text = sockserv_strerror(code);
        CHECK(text != NULL && *text != '\0');
        /* Each code has its own text. */
        for (int other = 0; other < code; other++)
            CHECK(strcmp(text, sockserv_strerror(other)) != 0);
    }
    CHECK(strcmp(sockserv_strerror(SOCKSERV_OK), "success") == 0);
    CHECK(strstr(sockserv_strerror(SOCKSERV_ERR_AUTH_FAILED), "authentication failed") != NULL);
    const int unknown_codes[] = {count, count + 1, 1000, INT_MAX, INT_MIN};
    for (size_t i = 0; i < sizeof unknown_codes / sizeof unknown_codes[0]; i++)
        CHECK(strcmp(sockserv_strerror(unknown_codes[i]), unknown) == 0);
}

static void *last_error_in_new_thread(void *arg)
{
    *(size_t *)arg = sockserv_last_error(NULL, 0);
    return NULL;
}

static void test_last_error(void)
{
    sockserv_config *config;
    REQUIRE_OK(sockserv_config_new(&config));

    sockserv_clear_error();
    CHECK(sockserv_last_error(NULL, 0) == 0);
    char buf[256] = "sentinel";
    CHECK(sockserv_last_error(buf, sizeof buf) == 0);
    CHECK(buf[0] == '\0'); /* no failure: an empty string */

    EXPECT_RC(sockserv_config_set_max_connections(config, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
    size_t n = sockserv_last_error(NULL, 0);
    CHECK(n > 10);

    /* Room for all of it: the whole detail, NUL-terminated. */
    char full[512];
    REQUIRE(n < sizeof full);
    CHECK(sockserv_last_error(full, sizeof full) == n);
    CHECK(strlen(full) == n);
    CHECK(strstr(full, "max connections") != NULL);

    /* Exactly n + 1 bytes is enough; n bytes truncates by one. */
    char exact[512];
    CHECK(sockserv_last_error(exact, n + 1) == n && strcmp(exact, full) == 0);
    CHECK(sockserv_last_error(exact, n) == n && strlen(exact) == n - 1 &&
          strncmp(exact, full, n - 1) == 0);

    /* Truncated like snprintf: len - 1 bytes and a NUL, the full length returned. */
    char small[6];
    memset(small, 'x', sizeof small);
    CHECK(sockserv_last_error(small, sizeof small) == n);
    CHECK(strlen(small) == sizeof small - 1 && strncmp(small, full, sizeof small - 1) == 0);
    char one = 'x';
    CHECK(sockserv_last_error(&one, 1) == n && one == '\0');
    char untouched = 'x';
    CHECK(sockserv_last_error(&untouched, 0) == n && untouched == 'x');

    /* A successful call does not clear it; another failure replaces it. */
    EXPECT_RC(sockserv_config_set_max_connections(config, 5), SOCKSERV_OK);
    CHECK(sockserv_last_error(NULL, 0) == n);
    EXPECT_RC(sockserv_config_set_backlog(config, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_DETAIL("backlog");

    /* Per thread: a new thread has had no failure. */
    size_t other = SIZE_MAX;
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, last_error_in_new_thread, &other) == 0);
    pthread_join(thread, NULL);
    CHECK(other == 0);

    sockserv_clear_error();
    CHECK(sockserv_last_error(NULL, 0) == 0);
    sockserv_config_free(config);
}

/* ------------------------------------------------------------------ */
/* NULL pointers, where no live handle is needed                       */

static void test_null_parameters(void)
{
    sockserv_config *config;
    REQUIRE_OK(sockserv_config_new(&config));
    const uint8_t bytes[4] = {1, 2, 3, 4};
    uint8_t mac[32];
    char text[SOCKSERV_ADDRSTRLEN];
    size_t size;
    uint64_t value;
    uint32_t ms;
    bool flag;
    int fd;
    const uint8_t *data;

    /* Config. */
    EXPECT_RC(sockserv_config_new(NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("config_out is NULL");
    EXPECT_RC(sockserv_config_set_auth_key(NULL, bytes, 4), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("config is NULL");
    EXPECT_RC(sockserv_config_set_auth_key(config, NULL, 4), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("key is NULL");
    EXPECT_RC(sockserv_config_add_auth_key(NULL, bytes, 4), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_add_auth_key(config, NULL, 4), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_clear_auth_keys(NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_max_frame_size(NULL, 100), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_handshake_timeout_ms(NULL, 100), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_io_timeout_ms(NULL, 100), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_connect_timeout_ms(NULL, 100), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_max_connections(NULL, 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_max_pending_handshakes(NULL, 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_when_full(NULL, SOCKSERV_WHEN_FULL_WAIT),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_backlog(NULL, 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_reuse_address(NULL, true), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_reuse_port(NULL, true), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_nodelay(NULL, true), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_keepalive(NULL, true), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_io_threads(NULL, 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_max_queued_bytes(NULL, 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_close_when_backed_up(NULL, true), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_idle_timeout_ms(NULL, 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_proxy_protocol(NULL, SOCKSERV_PROXY_OFF),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls_cert(NULL, "x", 1, "y", 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls_cert(config, NULL, 1, "y", 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls_cert(config, "x", 1, NULL, 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls_cert_files(NULL, "a", "b"), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls_cert_files(config, NULL, "b"), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls_cert_files(config, "a", NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls_ca(NULL, "x", 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls_ca(config, NULL, 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls_ca_file(NULL, "a"), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls_ca_file(config, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls_server_name(NULL, "a"), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls_server_name(config, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls_client_auth(NULL, SOCKSERV_TLS_CLIENT_AUTH_NONE),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_add_tls_alpn(NULL, "x"), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_add_tls_alpn(config, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls_min_version(NULL, SOCKSERV_TLS_VERSION_1_3),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_tls(NULL, true), SOCKSERV_ERR_NULL_PARAMETER);

    /* Clients; outputs stay untouched on failure. */
    sockserv_conn *conn = UNTOUCHED;
    EXPECT_RC(sockserv_connect(NULL, config, &conn), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("addr is NULL");
    CHECK(conn == UNTOUCHED);
    EXPECT_RC(sockserv_connect("tcp://127.0.0.1:1", config, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("conn_out is NULL");
    int pair[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
    EXPECT_RC(sockserv_conn_from_fd(pair[0], NULL, SOCKSERV_ROLE_CLIENT, NULL),
              SOCKSERV_ERR_NULL_PARAMETER);
    CHECK(fd_is_open(pair[0])); /* still ours */
    close(pair[0]);
    close(pair[1]);

    /* Connections: the handle itself. */
    EXPECT_RC(sockserv_conn_send(NULL, bytes, 4), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("conn is NULL");
    EXPECT_RC(sockserv_conn_recv(NULL, &data, &size), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_recv_into(NULL, mac, sizeof mac, &size), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_poll(NULL, 0, &flag), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_peer_addr(NULL, text, sizeof text, &size),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_local_addr(NULL, text, sizeof text, &size),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_peer_cert_sha256(NULL, mac), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_peer_cert_subject(NULL, text, sizeof text, &size),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_tls_info(NULL, &fd, text, sizeof text, &size),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_fd(NULL, &fd), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_set_timeout_ms(NULL, 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_get_timeout_ms(NULL, &ms), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_set_nodelay(NULL, true), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_get_nodelay(NULL, &flag), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_set_keepalive(NULL, true, 1, 1, 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_set_userdata(NULL, config), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_close(NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_retain(NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_flush(NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_set_option(NULL, SOCKSERV_OPT_NODELAY, 1), SOCKSERV_ERR_NULL_PARAMETER);
    {
        int64_t v = 0;
        EXPECT_RC(sockserv_conn_get_option(NULL, SOCKSERV_OPT_NODELAY, &v),
                  SOCKSERV_ERR_NULL_PARAMETER);
    }
    CHECK(sockserv_conn_get_userdata(NULL) == NULL);

    /* Servers. */
    sockserv_server *server = UNTOUCHED;
    EXPECT_RC(sockserv_server_new(NULL, config, &server), SOCKSERV_ERR_NULL_PARAMETER);
    CHECK(server == UNTOUCHED);
    EXPECT_RC(sockserv_server_new("tcp://127.0.0.1:0", config, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("server_out is NULL");
    EXPECT_RC(sockserv_server_set_handler(NULL, echo_handler, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("server is NULL");
    EXPECT_RC(sockserv_server_set_verify(NULL, verify_peer, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_server_set_event_handlers(NULL, NULL, NULL, NULL, NULL),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_server_local_addr(NULL, text, sizeof text, &size),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_server_serve(NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_server_start(NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_server_shutdown(NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_server_stat(NULL, SOCKSERV_STAT_ACCEPTED, &value),
              SOCKSERV_ERR_NULL_PARAMETER);

    /* HMAC: NULL is only allowed with a length of 0. */
    EXPECT_RC(sockserv_hmac_sha256(NULL, 4, bytes, 4, mac), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_hmac_sha256(bytes, 4, NULL, 4, mac), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_hmac_sha256(bytes, 4, bytes, 4, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("mac_out is NULL");
    EXPECT_RC(sockserv_hmac_sha256_verify(NULL, 4, bytes, 4, mac, 32), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_hmac_sha256_verify(bytes, 4, NULL, 4, mac, 32), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_hmac_sha256_verify(bytes, 4, bytes, 4, NULL, 32),
              SOCKSERV_ERR_NULL_PARAMETER);

    /* Freeing NULL does nothing. */
    sockserv_config_free(NULL);
    sockserv_conn_free(NULL);
    sockserv_conn_release(NULL);
    sockserv_server_free(NULL);
    sockserv_config_free(config);
}

/* ------------------------------------------------------------------ */
/* Config validation                                                   */

static void test_config_setters(void)
{
    sockserv_config *c;
    REQUIRE_OK(sockserv_config_new(&c));
    const uint8_t key[] = "k";

    EXPECT_RC(sockserv_config_set_auth_key(c, key, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_DETAIL("empty key");
    EXPECT_RC(sockserv_config_set_auth_key(c, NULL, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_add_auth_key(c, key, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_auth_key(c, key, 1), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_add_auth_key(c, WRONG_KEY, sizeof WRONG_KEY - 1), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_clear_auth_keys(c), SOCKSERV_OK);

    EXPECT_RC(sockserv_config_set_max_frame_size(c, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_max_frame_size(c, (uint64_t)INT64_MAX + 1),
              SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_max_frame_size(c, UINT64_MAX), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_max_frame_size(c, 1), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_max_frame_size(c, INT64_MAX), SOCKSERV_OK);

    EXPECT_RC(sockserv_config_set_handshake_timeout_ms(c, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_DETAIL("handshake timeout");
    EXPECT_RC(sockserv_config_set_handshake_timeout_ms(c, 1), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_connect_timeout_ms(c, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_DETAIL("connect timeout");
    EXPECT_RC(sockserv_config_set_connect_timeout_ms(c, UINT32_MAX), SOCKSERV_OK);
    /* 0 is allowed here: it means no I/O timeout. */
    EXPECT_RC(sockserv_config_set_io_timeout_ms(c, 0), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_io_timeout_ms(c, 250), SOCKSERV_OK);

    EXPECT_RC(sockserv_config_set_max_connections(c, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_max_connections(c, 1), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_max_pending_handshakes(c, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_DETAIL("pending handshakes");
    EXPECT_RC(sockserv_config_set_max_pending_handshakes(c, 4096), SOCKSERV_OK);

    EXPECT_RC(sockserv_config_set_when_full(c, 2), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_DETAIL("when_full 2");
    EXPECT_RC(sockserv_config_set_when_full(c, -1), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_when_full(c, SOCKSERV_WHEN_FULL_REFUSE), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_when_full(c, SOCKSERV_WHEN_FULL_WAIT), SOCKSERV_OK);

    EXPECT_RC(sockserv_config_set_backlog(c, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_backlog(c, -5), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_backlog(c, 1), SOCKSERV_OK);

    EXPECT_RC(sockserv_config_set_reuse_address(c, false), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_reuse_port(c, true), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_v6_only(NULL, true), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_v6_only(c, true), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_coalesce_sends(NULL, true), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_config_set_coalesce_sends(c, true), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_nodelay(c, false), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_keepalive(c, true), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_max_queued_bytes(c, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_max_queued_bytes(c, 1), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_io_threads(c, 0), SOCKSERV_OK); /* 0: one per core */
    EXPECT_RC(sockserv_config_set_io_threads(c, 2), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_idle_timeout_ms(c, 0), SOCKSERV_OK); /* 0: never */
    EXPECT_RC(sockserv_config_set_proxy_protocol(c, SOCKSERV_PROXY_REQUIRED), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_proxy_protocol(c, SOCKSERV_PROXY_OPTIONAL), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_proxy_protocol(c, 3), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_proxy_protocol(c, SOCKSERV_PROXY_OFF), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_close_when_backed_up(c, true), SOCKSERV_OK);
    /* TLS settings are checked when set. */
    EXPECT_RC(sockserv_config_set_tls_cert(c, "junk", 4, "junk", 4),
              SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_DETAIL("no certificate");
    EXPECT_RC(sockserv_config_set_tls_cert_files(c, "/nonexistent/cert.pem", "/nonexistent/key.pem"),
              SOCKSERV_ERR_IO);
    EXPECT_DETAIL("/nonexistent/cert.pem");
    EXPECT_RC(sockserv_config_set_tls_ca(c, "junk", 4), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_tls_ca_file(c, "/nonexistent/ca.pem"), SOCKSERV_ERR_IO);
    EXPECT_RC(sockserv_config_set_tls_server_name(c, ""), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_tls_server_name(c, "db.example"), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_tls_server_name(c, "::1"), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_tls_client_auth(c, 3), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_tls_client_auth(c, SOCKSERV_TLS_CLIENT_AUTH_OPTIONAL),
              SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_tls_client_auth(c, SOCKSERV_TLS_CLIENT_AUTH_REQUIRED),
              SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_tls_client_auth(c, SOCKSERV_TLS_CLIENT_AUTH_NONE), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_add_tls_alpn(c, ""), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_add_tls_alpn(c, "sockserv/1"), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_tls_min_version(c, 0x0302), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_config_set_tls_min_version(c, SOCKSERV_TLS_VERSION_1_2), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_tls_min_version(c, SOCKSERV_TLS_VERSION_1_3), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_tls(c, true), SOCKSERV_OK);
    EXPECT_RC(sockserv_config_set_tls(c, false), SOCKSERV_OK);
    sockserv_config_free(c);
}

/* ------------------------------------------------------------------ */
/* HMAC-SHA256                                                         */

static int hex_equals(const uint8_t *bytes, size_t len, const char *hex)
{
    char buf[2 * 64 + 1] = "";
    for (size_t i = 0; i < len && i < 64; i++)
        snprintf(buf + 2 * i, 3, "%02x", bytes[i]);
    return strcmp(buf, hex) == 0;
}

static void test_hmac(void)
{
    /* RFC 4231, test case 2. */
    const uint8_t key[] = "Jefe";
    const uint8_t msg[] = "what do ya want for nothing?";
    const char *expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    uint8_t mac[32];
    EXPECT_RC(sockserv_hmac_sha256(key, 4, msg, 28, mac), SOCKSERV_OK);
    CHECK(hex_equals(mac, 32, expected));

    EXPECT_RC(sockserv_hmac_sha256_verify(key, 4, msg, 28, mac, 32), SOCKSERV_OK);
    uint8_t tampered[32];
    memcpy(tampered, mac, 32);
    tampered[31] ^= 0x01;
    EXPECT_RC(sockserv_hmac_sha256_verify(key, 4, msg, 28, tampered, 32),
              SOCKSERV_ERR_AUTH_FAILED);
    EXPECT_RC(sockserv_hmac_sha256_verify(key, 4, msg, 27, mac, 32), SOCKSERV_ERR_AUTH_FAILED);
    /* Too short: a prefix of the right MAC is still refused. */
    EXPECT_RC(sockserv_hmac_sha256_verify(key, 4, msg, 28, mac, 31), SOCKSERV_ERR_AUTH_FAILED);
    EXPECT_DETAIL("31-byte MAC");
    EXPECT_RC(sockserv_hmac_sha256_verify(key, 4, msg, 28, NULL, 0), SOCKSERV_ERR_AUTH_FAILED);

    /* Empty key and message: NULL is allowed with a length of 0. */
    EXPECT_RC(sockserv_hmac_sha256(NULL, 0, NULL, 0, mac), SOCKSERV_OK);
    CHECK(hex_equals(mac, 32, "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"));
}

/* ------------------------------------------------------------------ */
/* Addresses                                                           */

/*
 * A loopback TCP port that is bound but not listening: connecting to it is
 * refused, and nobody else can take the port meanwhile. Writes its address
 * and returns the socket (close it after), or -1.
 */
static int closed_port(int family, char *addr, size_t len)
{
    int s = socket(family, SOCK_STREAM, 0);
    if (s < 0)
        return -1;
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *in;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_loopback;
        sl = sizeof *in6;
    }
    if (bind(s, (struct sockaddr *)&ss, sl) != 0 ||
        getsockname(s, (struct sockaddr *)&ss, &sl) != 0) {
        close(s);
        return -1;
    }
    unsigned port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                            : ((struct sockaddr_in6 *)&ss)->sin6_port);
    snprintf(addr, len, family == AF_INET ? "tcp://127.0.0.1:%u" : "tcp://[::1]:%u", port);
    return s;
}

static void test_addresses(void)
{
    static const char *const garbage[] = {
        "",
        "127.0.0.1:80",
        "tcp://",
        "tcp://127.0.0.1",
        "tcp://:80",
        "tcp://127.0.0.1:65536",
        "tcp://127.0.0.1:-1",
        "tcp://127.0.0.1:http",
        "tcp://::1:80",
        "tcp://[::1:80",
        "unix://",
        "http://127.0.0.1:80",
        "udp://127.0.0.1:5353",
    };
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        sockserv_conn *conn = UNTOUCHED;
        sockserv_server *server = UNTOUCHED;
        if (!EXPECT_RC(sockserv_connect(garbage[i], NULL, &conn), SOCKSERV_ERR_INVALID_ADDRESS))
            fprintf(stderr, "  address: \"%s\"\n", garbage[i]);
        EXPECT_DETAIL(garbage[i]);
        CHECK(conn == UNTOUCHED);
        if (!EXPECT_RC(sockserv_server_new(garbage[i], NULL, &server), SOCKSERV_ERR_INVALID_ADDRESS))
            fprintf(stderr, "  address: \"%s\"\n", garbage[i]);
        CHECK(server == UNTOUCHED);
    }
    /* Not UTF-8: refused as an argument before any parsing. */
    sockserv_conn *conn = UNTOUCHED;
    EXPECT_RC(sockserv_connect("tcp://\xff:1", NULL, &conn), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_DETAIL("UTF-8");

    /* Nobody listening: refused, with the address in the detail. */
    const int families[] = {AF_INET, AF_INET6};
    for (size_t i = 0; i < 2; i++) {
        char addr[64];
        int s = closed_port(families[i], addr, sizeof addr);
        if (!CHECK(s >= 0))
            continue;
        conn = UNTOUCHED;
        EXPECT_RC(sockserv_connect(addr, NULL, &conn), SOCKSERV_ERR_CONNECTION_REFUSED);
        EXPECT_DETAIL(addr);
        CHECK(conn == UNTOUCHED);
        close(s);
    }
}

/* ------------------------------------------------------------------ */
/* A server with a handler and clients, over one transport             */

static void test_exchange(const char *listen_addr)
{
    int tcp = strncmp(listen_addr, "tcp://", 6) == 0;
    printf("# exchange over %s\n", listen_addr);
    sockserv_config *config = config_with_key(KEY, sizeof KEY - 1);
    struct server_state st;
    server_state_init(&st);

    sockserv_server *server;
    REQUIRE_OK(sockserv_server_new(listen_addr, config, &server));

    /* The bound address: too small a buffer reports the size needed. */
    char tiny[4] = "abc";
    size_t tiny_needed = 0, needed = 0;
    EXPECT_RC(sockserv_server_local_addr(server, tiny, sizeof tiny, &tiny_needed),
              SOCKSERV_ERR_INSUFFICIENT_SIZE);
    CHECK(strcmp(tiny, "abc") == 0);
    EXPECT_RC(sockserv_server_local_addr(server, NULL, 0, &needed), SOCKSERV_ERR_INSUFFICIENT_SIZE);
    CHECK(needed == tiny_needed);
    char bound[SOCKSERV_ADDRSTRLEN];
    EXPECT_RC(sockserv_server_local_addr(server, NULL, sizeof bound, &needed),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_server_local_addr(server, bound, sizeof bound, NULL),
              SOCKSERV_ERR_NULL_PARAMETER);
    REQUIRE(tiny_needed > 0 && tiny_needed <= sizeof bound);
    REQUIRE_OK(sockserv_server_local_addr(server, bound, tiny_needed, &needed));
    CHECK(needed == strlen(bound) + 1 && needed == tiny_needed);
    if (tcp) /* port 0 was replaced by the real port */
        CHECK(strcmp(bound + strlen(bound) - 2, ":0") != 0 &&
              strncmp(bound, listen_addr, strlen(listen_addr) - 1) == 0);
    else
        CHECK(strcmp(bound, listen_addr) == 0);

    EXPECT_RC(sockserv_server_set_handler(server, echo_handler, &st), SOCKSERV_OK);
    EXPECT_RC(sockserv_server_set_verify(server, verify_peer, &st), SOCKSERV_OK);
    uint64_t value = 7;
    EXPECT_RC(sockserv_server_stat(server, 99, &value), SOCKSERV_ERR_INVALID_ARGUMENT);
    CHECK(value == 7);
    EXPECT_RC(sockserv_server_stat(server, SOCKSERV_STAT_ACCEPTED, NULL),
              SOCKSERV_ERR_NULL_PARAMETER);
    REQUIRE_OK(sockserv_server_start(server));
    /* Callbacks are set before starting, and a server starts once. */
    EXPECT_RC(sockserv_server_set_handler(server, echo_handler, &st), SOCKSERV_ERR_INVALID_STATE);
    EXPECT_RC(sockserv_server_set_verify(server, NULL, NULL), SOCKSERV_ERR_INVALID_STATE);
    EXPECT_RC(sockserv_server_set_event_handlers(server, NULL, NULL, NULL, NULL),
              SOCKSERV_ERR_INVALID_STATE);
    EXPECT_RC(sockserv_server_start(server), SOCKSERV_ERR_INVALID_STATE);
    EXPECT_RC(sockserv_server_serve(server), SOCKSERV_ERR_INVALID_STATE);

    sockserv_conn *conn;
    REQUIRE_OK(sockserv_connect(bound, config, &conn));

    /* Frames of several sizes, the empty one included. */
    const uint8_t hello[] = "hello";
    roundtrip(conn, hello, 5);
    roundtrip(conn, NULL, 0);
    size_t big_len = 1 << 20;
    uint8_t *big = malloc(big_len);
    REQUIRE(big != NULL);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)(i * 7 % 251);
    roundtrip(conn, big, big_len);

    /* NULL outputs and buffers with a live connection; nothing is consumed. */
    const uint8_t *data;
    size_t len;
    bool flag;
    EXPECT_RC(sockserv_conn_send(conn, NULL, 1), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_DETAIL("data is NULL");
    EXPECT_RC(sockserv_conn_recv(conn, NULL, &len), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_recv(conn, &data, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_recv_into(conn, NULL, 10, &len), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_recv_into(conn, big, 10, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_poll(conn, 0, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_fd(conn, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_get_timeout_ms(conn, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_get_nodelay(conn, NULL), SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_peer_addr(conn, NULL, SOCKSERV_ADDRSTRLEN, &len),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_peer_addr(conn, tiny, sizeof tiny, NULL),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_local_addr(conn, NULL, SOCKSERV_ADDRSTRLEN, &len),
              SOCKSERV_ERR_NULL_PARAMETER);
    EXPECT_RC(sockserv_conn_local_addr(conn, tiny, sizeof tiny, NULL),
              SOCKSERV_ERR_NULL_PARAMETER);
    /* No TLS here: no certificate and no TLS details, said so. */
    {
        uint8_t fingerprint[32];
        int version = 0;
        EXPECT_RC(sockserv_conn_peer_cert_sha256(conn, NULL), SOCKSERV_ERR_NULL_PARAMETER);
        EXPECT_RC(sockserv_conn_peer_cert_sha256(conn, fingerprint), SOCKSERV_ERR_INVALID_STATE);
        EXPECT_DETAIL("does not use TLS");
        EXPECT_RC(sockserv_conn_peer_cert_subject(conn, tiny, sizeof tiny, &len),
                  SOCKSERV_ERR_INVALID_STATE);
        EXPECT_RC(sockserv_conn_tls_info(conn, NULL, tiny, sizeof tiny, &len),
                  SOCKSERV_ERR_NULL_PARAMETER);
        EXPECT_RC(sockserv_conn_tls_info(conn, &version, tiny, sizeof tiny, &len),
                  SOCKSERV_ERR_INVALID_STATE);
        CHECK(version == 0);
    }

    /* poll: nothing pending, then a frame on its way. */
    flag = true;
    EXPECT_RC(sockserv_conn_poll(conn, 0, &flag), SOCKSERV_OK);
    CHECK(!flag);
    EXPECT_RC(sockserv_conn_send(conn, hello, 5), SOCKSERV_OK);
    flag = false;
    EXPECT_RC(sockserv_conn_poll(conn, WAIT_MS, &flag), SOCKSERV_OK);
    CHECK(flag);
    EXPECT_RC(sockserv_conn_recv(conn, &data, &len), SOCKSERV_OK);
    CHECK(len == 5 && memcmp(data, hello, 5) == 0);

    /* recv_into with a buffer too small: the needed size, the frame stays. */
    memset(big, 0xAB, 100);
    EXPECT_RC(sockserv_conn_send(conn, big, 100), SOCKSERV_OK);
    uint8_t small[10];
    len = 0;
    EXPECT_RC(sockserv_conn_recv_into(conn, small, sizeof small, &len),
              SOCKSERV_ERR_INSUFFICIENT_SIZE);
    CHECK(len == 100);
    EXPECT_DETAIL("the frame is 100 bytes, the buffer holds 10");
    len = 0;
    EXPECT_RC(sockserv_conn_recv_into(conn, NULL, 0, &len), SOCKSERV_ERR_INSUFFICIENT_SIZE);
    CHECK(len == 100);
    flag = false;
    EXPECT_RC(sockserv_conn_poll(conn, 0, &flag), SOCKSERV_OK); /* it is buffered */
    CHECK(flag);
    uint8_t exact[100];
    len = 0;
    EXPECT_RC(sockserv_conn_recv_into(conn, exact, sizeof exact, &len), SOCKSERV_OK);
    CHECK(len == 100 && exact[0] == 0xAB && exact[99] == 0xAB);
    /* An empty frame fits in no buffer at all. */
    EXPECT_RC(sockserv_conn_send(conn, NULL, 0), SOCKSERV_OK);
    len = 99;
    EXPECT_RC(sockserv_conn_recv_into(conn, NULL, 0, &len), SOCKSERV_OK);
    CHECK(len == 0);

    /* Addresses of both ends, with the same size protocol. */
    char peer[SOCKSERV_ADDRSTRLEN], local[SOCKSERV_ADDRSTRLEN];
    size_t peer_needed = 0, n = 0;
    EXPECT_RC(sockserv_conn_peer_addr(conn, tiny, sizeof tiny, &peer_needed),
              SOCKSERV_ERR_INSUFFICIENT_SIZE);
    EXPECT_RC(sockserv_conn_peer_addr(conn, peer, sizeof peer, &n), SOCKSERV_OK);
    CHECK(n == strlen(peer) + 1 && n == peer_needed);
    CHECK(strcmp(peer, bound) == 0);
    EXPECT_RC(sockserv_conn_local_addr(conn, NULL, 0, &n), SOCKSERV_ERR_INSUFFICIENT_SIZE);
    REQUIRE(n > 0 && n <= sizeof local);
    EXPECT_RC(sockserv_conn_local_addr(conn, local, n, &n), SOCKSERV_OK);
    pthread_mutex_lock(&st.lock);
    if (tcp) /* the server saw our local address */
        CHECK(strcmp(local, st.verified_peer) == 0);
    else /* an unnamed client socket */
        CHECK(strcmp(local, "unix://") == 0 && strcmp(st.verified_peer, "unix://") == 0);
    pthread_mutex_unlock(&st.lock);

    /* The socket's descriptor. */
    int fd = -1;
    EXPECT_RC(sockserv_conn_fd(conn, &fd), SOCKSERV_OK);
    int type = 0;
    socklen_t type_len = sizeof type;
    CHECK(fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) == 0 &&
          type == SOCK_STREAM);

    /* Timeouts: none by default; a receive that times out leaves the
       connection usable. */
    uint32_t ms = 1;
    EXPECT_RC(sockserv_conn_get_timeout_ms(conn, &ms), SOCKSERV_OK);
    CHECK(ms == 0);
    EXPECT_RC(sockserv_conn_set_timeout_ms(conn, 1500), SOCKSERV_OK);
    EXPECT_RC(sockserv_conn_get_timeout_ms(conn, &ms), SOCKSERV_OK);
    CHECK(ms == 1500);
    EXPECT_RC(sockserv_conn_set_timeout_ms(conn, 200), SOCKSERV_OK);
    long long start = now_ms();
    EXPECT_RC(sockserv_conn_recv(conn, &data, &len), SOCKSERV_ERR_TIMED_OUT);
    long long took = now_ms() - start;
    CHECK(took >= 150 && took < WAIT_MS);
    roundtrip(conn, hello, 5);
    EXPECT_RC(sockserv_conn_set_timeout_ms(conn, 0), SOCKSERV_OK);
    EXPECT_RC(sockserv_conn_get_timeout_ms(conn, &ms), SOCKSERV_OK);
    CHECK(ms == 0);

    /* Socket options: TCP only. */
    if (tcp) {
        flag = false;
        EXPECT_RC(sockserv_conn_get_nodelay(conn, &flag), SOCKSERV_OK);
        CHECK(flag); /* on by default */
        EXPECT_RC(sockserv_conn_set_nodelay(conn, false), SOCKSERV_OK);
        EXPECT_RC(sockserv_conn_get_nodelay(conn, &flag), SOCKSERV_OK);
        CHECK(!flag);
        EXPECT_RC(sockserv_conn_set_keepalive(conn, true, 10, 5, 3), SOCKSERV_OK);
        int64_t v = 0;
        EXPECT_RC(sockserv_conn_get_option(conn, SOCKSERV_OPT_KEEPALIVE_IDLE, &v), SOCKSERV_OK);
        CHECK(v == 10);
        EXPECT_RC(sockserv_conn_set_keepalive(conn, false, 0, 0, 0), SOCKSERV_OK);
        EXPECT_RC(sockserv_conn_get_option(conn, SOCKSERV_OPT_KEEPALIVE, &v), SOCKSERV_OK);
        CHECK(v == 0);
        EXPECT_RC(sockserv_conn_set_option(conn, SOCKSERV_OPT_LINGER, 2), SOCKSERV_OK);
        EXPECT_RC(sockserv_conn_get_option(conn, SOCKSERV_OPT_LINGER, &v), SOCKSERV_OK);
        CHECK(v == 2);
        EXPECT_RC(sockserv_conn_set_option(conn, SOCKSERV_OPT_LINGER, -1), SOCKSERV_OK);
    } else {
        EXPECT_RC(sockserv_conn_set_nodelay(conn, true), SOCKSERV_ERR_IO);
    }
    {
        /* Options every transport has, and the ones out of range. */
        int64_t v = 0;
        EXPECT_RC(sockserv_conn_set_option(conn, SOCKSERV_OPT_RCVBUF, 65536), SOCKSERV_OK);
        EXPECT_RC(sockserv_conn_get_option(conn, SOCKSERV_OPT_RCVBUF, &v), SOCKSERV_OK);
        CHECK(v >= 65536);
        EXPECT_RC(sockserv_conn_set_option(conn, SOCKSERV_OPT_RCVBUF, 0), SOCKSERV_ERR_INVALID_ARGUMENT);
        EXPECT_RC(sockserv_conn_set_option(conn, 999, 1), SOCKSERV_ERR_INVALID_ARGUMENT);
        EXPECT_RC(sockserv_conn_get_option(conn, SOCKSERV_OPT_RCVBUF, NULL),
                  SOCKSERV_ERR_NULL_PARAMETER);
        /* Non-blocking: nothing to receive yet, and nothing left to flush. */
        EXPECT_RC(sockserv_conn_set_option(conn, SOCKSERV_OPT_NONBLOCKING, 1), SOCKSERV_OK);
        EXPECT_RC(sockserv_conn_get_option(conn, SOCKSERV_OPT_NONBLOCKING, &v), SOCKSERV_OK);
        CHECK(v == 1);
        const uint8_t *nb_data;
        size_t nb_len;
        EXPECT_RC(sockserv_conn_recv(conn, &nb_data, &nb_len), SOCKSERV_ERR_WOULD_BLOCK);
        EXPECT_RC(sockserv_conn_flush(conn), SOCKSERV_OK);
        EXPECT_RC(sockserv_conn_set_option(conn, SOCKSERV_OPT_NONBLOCKING, 0), SOCKSERV_OK);
    }

    /* Userdata on our own handle. */
    int mine = 0;
    CHECK(sockserv_conn_get_userdata(conn) == NULL);
    EXPECT_RC(sockserv_conn_set_userdata(conn, &mine), SOCKSERV_OK);
    CHECK(sockserv_conn_get_userdata(conn) == &mine);

    /* Stats while one connection is being served. */
    CHECK(stat_of(server, SOCKSERV_STAT_ACCEPTED) == 1);
    CHECK(stat_of(server, SOCKSERV_STAT_ACTIVE) == 1);
    CHECK(stat_of(server, SOCKSERV_STAT_HANDLED) == 0);
    CHECK(stat_of(server, SOCKSERV_STAT_HANDSHAKE_FAILURES) == 0);
    CHECK(stat_of(server, SOCKSERV_STAT_PROXY_FAILURES) == 0);

    /* A wrong key is refused with AUTH_FAILED; the server counts it, and
     * the refusal log hears of it with the code and the detail. */
    static struct refusals refusals = {PTHREAD_MUTEX_INITIALIZER, 0, SOCKSERV_OK, ""};
    refusals.count = 0;
    REQUIRE_OK(sockserv_set_refusal_log(log_refusal, &refusals));
    sockserv_config *wrong = config_with_key(WRONG_KEY, sizeof WRONG_KEY - 1);
    sockserv_conn *intruder = UNTOUCHED;
    EXPECT_RC(sockserv_connect(bound, wrong, &intruder), SOCKSERV_ERR_AUTH_FAILED);
    EXPECT_DETAIL("keys do not match");
    CHECK(intruder == UNTOUCHED);
    CHECK(wait_stat(server, SOCKSERV_STAT_HANDSHAKE_FAILURES, 1));
    sockserv_config_free(wrong);
    for (long long end = now_ms() + WAIT_MS; refusals_seen(&refusals) == 0 && now_ms() < end;)
        sleep_ms(5);
    CHECK(refusals_seen(&refusals) == 1);
    CHECK(refusals.code == SOCKSERV_ERR_AUTH_FAILED);
    CHECK(strstr(refusals.detail, "does not match the key") != NULL);
    REQUIRE_OK(sockserv_set_refusal_log(NULL, NULL));

    /* ...and the first connection is unharmed. */
    roundtrip(conn, hello, 5);

    /* The handler returns on "close": the server closes, we see CLOSED. */
    EXPECT_RC(sockserv_conn_send(conn, (const uint8_t *)"close", 5), SOCKSERV_OK);
    EXPECT_RC(sockserv_conn_recv(conn, &data, &len), SOCKSERV_ERR_CLOSED);
    CHECK(wait_stat(server, SOCKSERV_STAT_HANDLED, 1));
    sockserv_conn_free(conn);

    /* A new client with the right key still gets in. */
    REQUIRE_OK(sockserv_connect(bound, config, &conn));
    roundtrip(conn, hello, 5);
    sockserv_conn_free(conn);
    CHECK(wait_stat(server, SOCKSERV_STAT_HANDLED, 2));
    CHECK(wait_stat(server, SOCKSERV_STAT_ACTIVE, 0));

    /* The verify callback can refuse a peer before the handshake. */
    pthread_mutex_lock(&st.lock);
    st.refuse = 1;
    pthread_mutex_unlock(&st.lock);
    conn = UNTOUCHED;
    EXPECT_RC(sockserv_connect(bound, config, &conn), SOCKSERV_ERR_CLOSED);
    CHECK(conn == UNTOUCHED);
    CHECK(stat_of(server, SOCKSERV_STAT_REFUSED_BY_VERIFY) == 1);
    pthread_mutex_lock(&st.lock);
    st.refuse = 0;
    pthread_mutex_unlock(&st.lock);

    /* A second server on the same address is refused. For a Unix socket,
       sockserv probes the path by connecting to it: the live server sees
       that probe as one more connection, which fails its handshake. */
    sockserv_server *twin = UNTOUCHED;
    EXPECT_RC(sockserv_server_new(bound, config, &twin), SOCKSERV_ERR_ADDRESS_IN_USE);
    EXPECT_DETAIL(tcp ? "in use" : "another server is listening");
    CHECK(twin == UNTOUCHED);
    uint64_t probes = tcp ? 0 : 1;
    CHECK(wait_stat(server, SOCKSERV_STAT_HANDSHAKE_FAILURES, 1 + probes));

    /* Freeing the server closes a live connection (its handler is woken
       with SHUTDOWN) and removes a Unix socket file. */
    REQUIRE_OK(sockserv_connect(bound, config, &conn));
    roundtrip(conn, hello, 5);
    CHECK(stat_of(server, SOCKSERV_STAT_ACCEPTED) == 5 + probes);
    EXPECT_RC(sockserv_server_shutdown(server), SOCKSERV_OK);
    sockserv_server_free(server);
    EXPECT_RC(sockserv_conn_recv(conn, &data, &len), SOCKSERV_ERR_CLOSED);
    sockserv_conn_free(conn);
    if (tcp) {
        conn = UNTOUCHED;
        EXPECT_RC(sockserv_connect(bound, config, &conn), SOCKSERV_ERR_CONNECTION_REFUSED);
    } else {
        CHECK(access(bound + strlen("unix://"), F_OK) != 0 && errno == ENOENT);
    }

    pthread_mutex_lock(&st.lock);
    CHECK(st.handler_calls == 3);
    CHECK(st.handler_failures == 0);
    pthread_mutex_unlock(&st.lock);
    pthread_mutex_destroy(&st.lock);
    free(big);
    sockserv_config_free(config);
}

/* ------------------------------------------------------------------ */
/* Limits: a client's maximum frame size; a full server that refuses    */

static void test_limits(void)
{
    printf("# limits\n");
    sockserv_config *config = config_with_key(KEY, sizeof KEY - 1);
    REQUIRE_OK(sockserv_config_set_max_connections(config, 1));
    REQUIRE_OK(sockserv_config_set_when_full(config, SOCKSERV_WHEN_FULL_REFUSE));
    struct server_state st;
    server_state_init(&st);
    sockserv_server *server;
    REQUIRE_OK(sockserv_server_new("tcp://127.0.0.1:0", config, &server));
    REQUIRE_OK(sockserv_server_set_handler(server, echo_handler, &st));
    REQUIRE_OK(sockserv_server_start(server));
    char bound[SOCKSERV_ADDRSTRLEN];
    size_t n;
    REQUIRE_OK(sockserv_server_local_addr(server, bound, sizeof bound, &n));

    /* This client refuses frames over 8 bytes. */
    sockserv_config *strict = config_with_key(KEY, sizeof KEY - 1);
    REQUIRE_OK(sockserv_config_set_max_frame_size(strict, 8));
    sockserv_conn *conn;
    REQUIRE_OK(sockserv_connect(bound, strict, &conn));
    roundtrip(conn, (const uint8_t *)"12345678", 8);

    /* The server is full (one connection): the next one is closed at once. */
    sockserv_conn *extra = UNTOUCHED;
    EXPECT_RC(sockserv_connect(bound, config, &extra), SOCKSERV_ERR_CLOSED);
    CHECK(extra == UNTOUCHED);
    CHECK(stat_of(server, SOCKSERV_STAT_REFUSED_WHEN_FULL) == 1);

    /* A 9-byte echo is refused before it is read, and the stream closed. */
    const uint8_t *data;
    size_t len;
    EXPECT_RC(sockserv_conn_send(conn, (const uint8_t *)"123456789", 9), SOCKSERV_OK);
    EXPECT_RC(sockserv_conn_recv(conn, &data, &len), SOCKSERV_ERR_FRAME_TOO_LARGE);
    EXPECT_DETAIL("9");
    EXPECT_RC(sockserv_conn_recv(conn, &data, &len), SOCKSERV_ERR_BROKEN);
    EXPECT_RC(sockserv_conn_send(conn, (const uint8_t *)"x", 1), SOCKSERV_ERR_BROKEN);
    sockserv_conn_free(conn);

    /* Once the slot is free, a client gets in again. */
    CHECK(wait_stat(server, SOCKSERV_STAT_ACTIVE, 0));
    REQUIRE_OK(sockserv_connect(bound, config, &conn));
    roundtrip(conn, (const uint8_t *)"again", 5);
    sockserv_conn_free(conn);

    sockserv_server_free(server);
    pthread_mutex_lock(&st.lock);
    CHECK(st.handler_calls == 2 && st.handler_failures == 0);
    pthread_mutex_unlock(&st.lock);
    pthread_mutex_destroy(&st.lock);
    sockserv_config_free(strict);
    sockserv_config_free(config);
}

/* ------------------------------------------------------------------ */
/* serve on a thread of ours, stopped by shutdown                      */

struct serve_run {
    sockserv_server *server;
    sockserv_result rc;
};

static void *serve_thread(void *arg)
{
    struct serve_run *run = arg;
    run->rc = sockserv_server_serve(run->server);
    return NULL;
}

static void test_serve_and_shutdown(void)
{
    printf("# serve and shutdown\n");
    struct server_state st;
    server_state_init(&st);
    struct serve_run run = {NULL, SOCKSERV_ERR_PANIC};
    REQUIRE_OK(sockserv_server_new("tcp://127.0.0.1:0", NULL, &run.server)); /* no key */
    REQUIRE_OK(sockserv_server_set_handler(run.server, echo_handler, &st));
    char bound[SOCKSERV_ADDRSTRLEN];
    size_t n;
    REQUIRE_OK(sockserv_server_local_addr(run.server, bound, sizeof bound, &n));
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, serve_thread, &run) == 0);

    sockserv_conn *conn;
    REQUIRE_OK(sockserv_connect(bound, NULL, &conn));
    roundtrip(conn, (const uint8_t *)"plain", 5);

    /* shutdown returns at once and serve returns OK; the live connection
       goes on until the server is freed. */
    EXPECT_RC(sockserv_server_shutdown(run.server), SOCKSERV_OK);
    pthread_join(thread, NULL);
    EXPECT_RC(run.rc, SOCKSERV_OK);
    roundtrip(conn, (const uint8_t *)"still", 5);
    /* A server serves once. */
    EXPECT_RC(sockserv_server_serve(run.server), SOCKSERV_ERR_SHUTDOWN);
    EXPECT_RC(sockserv_server_start(run.server), SOCKSERV_ERR_SHUTDOWN);
    EXPECT_RC(sockserv_server_shutdown(run.server), SOCKSERV_OK); /* twice is fine */
    sockserv_server_free(run.server);
    sockserv_conn_free(conn);

    /* Shut down before it ever served: serving is refused. */
    sockserv_server *server;
    REQUIRE_OK(sockserv_server_new("tcp://127.0.0.1:0", NULL, &server));
    EXPECT_RC(sockserv_server_shutdown(server), SOCKSERV_OK);
    EXPECT_RC(sockserv_server_serve(server), SOCKSERV_ERR_SHUTDOWN);
    sockserv_server_free(server);
    pthread_mutex_destroy(&st.lock);
}

/* ------------------------------------------------------------------ */
/* Adopting sockets we already have                                    */

struct adopt {
    int fd;
    const sockserv_config *config;
    int role;
    sockserv_result rc;
    sockserv_conn *conn;
};

static void *adopt_thread(void *arg)
{
    struct adopt *a = arg;
    a->rc = sockserv_conn_from_fd(a->fd, a->config, a->role, &a->conn);
    return NULL;
}

/* Runs conn_from_fd on both ends of a socketpair at once (the handshake
   needs both), the server role on a thread of its own. */
static void adopt_pair(struct adopt *server_end, struct adopt *client_end,
                       const sockserv_config *server_config, const sockserv_config *client_config)
{
    int pair[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
    *server_end = (struct adopt){pair[0], server_config, SOCKSERV_ROLE_SERVER,
                                 SOCKSERV_ERR_PANIC, UNTOUCHED};
    *client_end = (struct adopt){pair[1], client_config, SOCKSERV_ROLE_CLIENT,
                                 SOCKSERV_ERR_PANIC, UNTOUCHED};
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, adopt_thread, server_end) == 0);
    adopt_thread(client_end);
    pthread_join(thread, NULL);
}

static void test_from_fd(void)
{
    printf("# conn_from_fd\n");
    sockserv_config *config = config_with_key(KEY, sizeof KEY - 1);
    struct adopt s, c;

    /* Same key: both ends authenticate, then frame both ways. */
    adopt_pair(&s, &c, config, config);
    if (EXPECT_RC(s.rc, SOCKSERV_OK) & EXPECT_RC(c.rc, SOCKSERV_OK)) {
        const uint8_t *data;
        size_t len;
        EXPECT_RC(sockserv_conn_send(c.conn, (const uint8_t *)"up", 2), SOCKSERV_OK);
        EXPECT_RC(sockserv_conn_recv(s.conn, &data, &len), SOCKSERV_OK);
        CHECK(len == 2 && memcmp(data, "up", 2) == 0);
        EXPECT_RC(sockserv_conn_send(s.conn, (const uint8_t *)"down", 4), SOCKSERV_OK);
        EXPECT_RC(sockserv_conn_recv(c.conn, &data, &len), SOCKSERV_OK);
        CHECK(len == 4 && memcmp(data, "down", 4) == 0);
        char addr[SOCKSERV_ADDRSTRLEN];
        EXPECT_RC(sockserv_conn_peer_addr(c.conn, addr, sizeof addr, &len), SOCKSERV_OK);
        CHECK(strcmp(addr, "unix://") == 0);
        int fd = -1;
        EXPECT_RC(sockserv_conn_fd(s.conn, &fd), SOCKSERV_OK);
        CHECK(fd == s.fd);
        /* Blocking mode: close shuts the socket down at once; the peer sees
           the end, later calls are BROKEN, and the handle is still freed. */
        EXPECT_RC(sockserv_conn_close(c.conn), SOCKSERV_OK);
        EXPECT_RC(sockserv_conn_send(c.conn, (const uint8_t *)"x", 1), SOCKSERV_ERR_BROKEN);
        EXPECT_RC(sockserv_conn_recv(s.conn, &data, &len), SOCKSERV_ERR_CLOSED);
        sockserv_conn_free(s.conn); /* closes the fds */
        sockserv_conn_free(c.conn);
    }

    /* Different keys: both ends fail, and the fds are still ours. */
    sockserv_config *wrong = config_with_key(WRONG_KEY, sizeof WRONG_KEY - 1);
    adopt_pair(&s, &c, config, wrong);
    EXPECT_RC(s.rc, SOCKSERV_ERR_AUTH_FAILED);
    EXPECT_RC(c.rc, SOCKSERV_ERR_AUTH_FAILED);
    CHECK(s.conn == UNTOUCHED && c.conn == UNTOUCHED);
    CHECK(fd_is_open(s.fd) && fd_is_open(c.fd));
    close(s.fd);
    close(c.fd);
    sockserv_config_free(wrong);

    /* No key (NULL config): plain framing, no handshake to wait for. */
    int pair[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
    sockserv_conn *a, *b;
    if (EXPECT_RC(sockserv_conn_from_fd(pair[0], NULL, SOCKSERV_ROLE_SERVER, &a), SOCKSERV_OK)) {
        if (EXPECT_RC(sockserv_conn_from_fd(pair[1], NULL, SOCKSERV_ROLE_CLIENT, &b),
                      SOCKSERV_OK)) {
            const uint8_t *data;
            size_t len;
            EXPECT_RC(sockserv_conn_send(a, (const uint8_t *)"plain", 5), SOCKSERV_OK);
            EXPECT_RC(sockserv_conn_recv(b, &data, &len), SOCKSERV_OK);
            CHECK(len == 5 && memcmp(data, "plain", 5) == 0);
            sockserv_conn_free(b);
        }
        sockserv_conn_free(a);
    }

    /* Bad arguments: refused, and the fd stays open and ours. */
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
    sockserv_conn *conn = UNTOUCHED;
    EXPECT_RC(sockserv_conn_from_fd(pair[0], config, 5, &conn), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_DETAIL("role 5");
    EXPECT_RC(sockserv_conn_from_fd(-1, config, SOCKSERV_ROLE_CLIENT, &conn),
              SOCKSERV_ERR_INVALID_ARGUMENT);
    CHECK(conn == UNTOUCHED && fd_is_open(pair[0]));
    close(pair[0]);
    close(pair[1]);

    int pipe_fds[2];
    REQUIRE(pipe(pipe_fds) == 0);
    EXPECT_RC(sockserv_conn_from_fd(pipe_fds[0], config, SOCKSERV_ROLE_CLIENT, &conn),
              SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_DETAIL("not a socket");
    CHECK(conn == UNTOUCHED && fd_is_open(pipe_fds[0]));
    close(pipe_fds[0]);
    close(pipe_fds[1]);

    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    REQUIRE(udp >= 0);
    EXPECT_RC(sockserv_conn_from_fd(udp, config, SOCKSERV_ROLE_CLIENT, &conn),
              SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_DETAIL("not a stream socket");
    CHECK(conn == UNTOUCHED && fd_is_open(udp));
    close(udp);

    sockserv_config_free(config);
}

/* ------------------------------------------------------------------ */
/* Datagrams (tests/c/datagram_test.c checks their functions, NULLs     */
/* included): here only that the two kinds of address do not mix.       */

static void test_datagram_addresses_are_not_stream_addresses(void)
{
    sockserv_config *config;
    REQUIRE_OK(sockserv_config_new(&config));
    sockserv_dgram_server *server = UNTOUCHED;
    /* A datagram address is not a stream address, and the reverse. */
    sockserv_server *stream = UNTOUCHED;
    EXPECT_RC(sockserv_server_new("udp://127.0.0.1:0", config, &stream),
              SOCKSERV_ERR_INVALID_ADDRESS);
    EXPECT_RC(sockserv_dgram_server_new("tcp://127.0.0.1:0", config, &server),
              SOCKSERV_ERR_INVALID_ADDRESS);
    CHECK(stream == UNTOUCHED && server == UNTOUCHED);
    CHECK(strcmp(sockserv_strerror(SOCKSERV_ERR_DATAGRAM_TOO_LARGE),
                 "unknown sockserv result code") != 0);

    sockserv_dgram_free(NULL);
    sockserv_dgram_server_free(NULL);
    sockserv_config_free(config);
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: api_test TMPDIR\n");
        return 2;
    }
    char unix_addr[200];
    snprintf(unix_addr, sizeof unix_addr, "unix://%s/api_test.sock", argv[1]);
    /* Unbuffered, so progress and failures interleave in order in a pipe. */
    setvbuf(stdout, NULL, _IONBF, 0);

    printf("# version, strerror, last_error\n");
    test_version();
    test_strerror();
    test_last_error();
    printf("# NULL parameters\n");
    test_null_parameters();
    printf("# config setters\n");
    test_config_setters();
    printf("# hmac\n");
    test_hmac();
    printf("# addresses\n");
    test_addresses();
    test_exchange("tcp://127.0.0.1:0");
    test_exchange("tcp://[::1]:0");
    test_exchange(unix_addr);
    test_limits();
    test_serve_and_shutdown();
    test_from_fd();
    printf("# datagram NULL parameters\n");
    test_datagram_addresses_are_not_stream_addresses();

    printf("api_test: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
