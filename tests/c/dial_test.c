/*
 * Outgoing connections from C (issue 12):
 *
 * 1. sockserv_server_dial on an unbound engine (sockserv_server_new_unbound):
 *    a dialed connection echoes through an event server with the same
 *    callbacks as an accepted one; sockserv_dialer_close closes it
 *    (on_close once, SOCKSERV_OK); a refused dial is reported with
 *    SOCKSERV_ERR_CONNECTION_REFUSED and, with 0, 0, only once; a key
 *    mismatch with SOCKSERV_ERR_AUTH_FAILED, and sockserv_dialer_free from
 *    inside that report stops every later one.
 *
 * Run by tests/c_api/dial.rs. Prints "dial_test: N checks, F failed";
 * exits 1 on any failure. Every wait is bounded in time.
 */
#define _POSIX_C_SOURCE 200809L

#include "check.h"

#include <pthread.h>
#include <stdbool.h>

#define WAIT_MS 10000

static const char KEY[] = "dial-test-key";

/* What the callbacks saw; they run on I/O threads, so it is locked. */
struct seen {
    pthread_mutex_t lock;
    int opened, closed, echoed, errors;
    sockserv_result last_close, last_error;
    char error_detail[512];
    bool free_in_report;
};

static struct seen seen = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, SOCKSERV_OK, SOCKSERV_OK, "", false};

static int read_count(const int *counter)
{
    int v;
    pthread_mutex_lock(&seen.lock);
    v = *counter;
    pthread_mutex_unlock(&seen.lock);
    return v;
}

static bool wait_count(const int *counter, int want)
{
    long long end = now_ms() + WAIT_MS;
    while (now_ms() < end) {
        if (read_count(counter) >= want)
            return true;
        sleep_ms(2);
    }
    return read_count(counter) >= want;
}

static void reset_seen(void)
{
    pthread_mutex_lock(&seen.lock);
    seen.opened = seen.closed = seen.echoed = seen.errors = 0;
    seen.last_close = seen.last_error = SOCKSERV_OK;
    seen.error_detail[0] = 0;
    seen.free_in_report = false;
    pthread_mutex_unlock(&seen.lock);
}

static void echo_frame(void *userdata, sockserv_conn *conn, const uint8_t *data, size_t len)
{
    (void)userdata;
    sockserv_conn_send(conn, data, len);
}

static void dialed_open(void *userdata, sockserv_conn *conn)
{
    (void)userdata;
    pthread_mutex_lock(&seen.lock);
    seen.opened++;
    pthread_mutex_unlock(&seen.lock);
    sockserv_conn_send(conn, (const uint8_t *)"dialed", 6);
}

static void dialed_frame(void *userdata, sockserv_conn *conn, const uint8_t *data, size_t len)
{
    (void)userdata;
    (void)conn;
    pthread_mutex_lock(&seen.lock);
    if (len == 6 && memcmp(data, "dialed", 6) == 0)
        seen.echoed++;
    pthread_mutex_unlock(&seen.lock);
}

static void dialed_close(void *userdata, sockserv_conn *conn, sockserv_result reason)
{
    (void)userdata;
    (void)conn;
    pthread_mutex_lock(&seen.lock);
    seen.closed++;
    seen.last_close = reason;
    pthread_mutex_unlock(&seen.lock);
}

static void dial_error(void *userdata, sockserv_dialer *dialer, int code, const char *detail_text)
{
    bool free_it;
    (void)userdata;
    pthread_mutex_lock(&seen.lock);
    seen.errors++;
    seen.last_error = (sockserv_result)code;
    snprintf(seen.error_detail, sizeof seen.error_detail, "%s", detail_text);
    free_it = seen.free_in_report;
    pthread_mutex_unlock(&seen.lock);
    if (free_it)
        sockserv_dialer_free(dialer); /* allowed from its own report */
}

static sockserv_config *keyed(const char *key)
{
    sockserv_config *config = NULL;
    REQUIRE_OK(sockserv_config_new(&config));
    REQUIRE_OK(sockserv_config_set_auth_key(config, (const uint8_t *)key, strlen(key)));
    return config;
}

static void test_dialing(void)
{
    sockserv_config *config = keyed(KEY), *wrong = keyed("another key");
    sockserv_server *server = NULL, *engine = NULL;
    sockserv_dialer *dialer = UNTOUCHED;
    char addr[SOCKSERV_ADDRSTRLEN], closed_addr[SOCKSERV_ADDRSTRLEN];
    size_t needed = 0;

    REQUIRE_OK(sockserv_server_new("tcp://127.0.0.1:0", config, &server));
    REQUIRE_OK(sockserv_server_set_event_handlers(server, NULL, echo_frame, NULL, NULL));
    REQUIRE_OK(sockserv_server_start(server));
    REQUIRE_OK(sockserv_server_local_addr(server, addr, sizeof addr, &needed));

    REQUIRE_OK(sockserv_server_new_unbound(config, &engine));
    REQUIRE_OK(sockserv_server_local_addr(engine, closed_addr, sizeof closed_addr, &needed));
    CHECK(closed_addr[0] == 0);
    /* Not started yet: nothing to dial from. */
    EXPECT_RC(sockserv_server_dial(engine, addr, NULL, &dialer), SOCKSERV_ERR_INVALID_STATE);
    CHECK(dialer == UNTOUCHED);
    REQUIRE_OK(sockserv_server_set_event_handlers(engine, dialed_open, dialed_frame, dialed_close,
                                                  NULL));
    REQUIRE_OK(sockserv_server_set_dial_error_handler(engine, dial_error, NULL));
    REQUIRE_OK(sockserv_server_start(engine));

    /* Echo through a dialed connection, then close it. */
    reset_seen();
    REQUIRE_OK(sockserv_server_dial(engine, addr, NULL, &dialer));
    CHECK(wait_count(&seen.echoed, 1));
    CHECK(read_count(&seen.opened) == 1);
    EXPECT_RC(sockserv_dialer_close(dialer), SOCKSERV_OK);
    EXPECT_RC(sockserv_dialer_close(dialer), SOCKSERV_OK);
    CHECK(wait_count(&seen.closed, 1));
    CHECK(seen.last_close == SOCKSERV_OK);
    sleep_ms(200);
    CHECK(read_count(&seen.opened) == 1);
    CHECK(read_count(&seen.errors) == 0);
    EXPECT_RC(sockserv_dialer_set_reconnect(dialer, -1, 10), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_dialer_set_reconnect(dialer, 0, 10), SOCKSERV_ERR_INVALID_ARGUMENT);
    EXPECT_RC(sockserv_dialer_set_reconnect(dialer, 20, 10), SOCKSERV_ERR_INVALID_ARGUMENT);
    sockserv_dialer_free(dialer);

    /* A refused dial, once: reported once, with its code. */
    {
        sockserv_server *gone = NULL;
        REQUIRE_OK(sockserv_server_new("tcp://127.0.0.1:0", NULL, &gone));
        REQUIRE_OK(sockserv_server_local_addr(gone, closed_addr, sizeof closed_addr, &needed));
        sockserv_server_free(gone);
    }
    reset_seen();
    REQUIRE_OK(sockserv_server_dial(engine, closed_addr, NULL, &dialer));
    EXPECT_RC(sockserv_dialer_set_reconnect(dialer, 0, 0), SOCKSERV_OK);
    CHECK(wait_count(&seen.errors, 1));
    sleep_ms(400);
    CHECK(read_count(&seen.errors) == 1);
    CHECK(seen.last_error == SOCKSERV_ERR_CONNECTION_REFUSED);
    CHECK(strstr(seen.error_detail, "connecting to tcp://127.0.0.1:") != NULL);
    sockserv_dialer_free(dialer);

    /* The wrong key: AUTH_FAILED; freed inside the report, none follows. */
    reset_seen();
    seen.free_in_report = true;
    REQUIRE_OK(sockserv_server_dial(engine, addr, wrong, &dialer));
    EXPECT_RC(sockserv_dialer_set_reconnect(dialer, 20, 20), SOCKSERV_OK);
    CHECK(wait_count(&seen.errors, 1));
    sleep_ms(300);
    CHECK(read_count(&seen.errors) == 1);
    CHECK(seen.last_error == SOCKSERV_ERR_AUTH_FAILED);
    CHECK(read_count(&seen.opened) == 0);

    sockserv_server_free(engine);
    sockserv_server_free(server);
    sockserv_config_free(config);
    sockserv_config_free(wrong);
}

int main(void)
{
    test_dialing();
    printf("dial_test: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
