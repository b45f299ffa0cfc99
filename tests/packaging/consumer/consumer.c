/*
 * A program built against an installed sockserv, the way a user builds one
 * (pkg-config, pkg-config --static, CMake's find_package): an authenticated
 * echo server and a client in one process. Run by tests/packaging/install.rs.
 */
#include <sockserv.h>

#include <stdio.h>
#include <string.h>

static void echo(void *userdata, sockserv_conn *conn)
{
    const uint8_t *frame;
    size_t len;
    (void)userdata;
    while (sockserv_conn_recv(conn, &frame, &len) == SOCKSERV_OK)
        if (sockserv_conn_send(conn, frame, len) != SOCKSERV_OK)
            break;
}

static int fail(const char *what, sockserv_result rc)
{
    char detail[256];
    sockserv_last_error(detail, sizeof detail);
    fprintf(stderr, "consumer: %s: %s (%s)\n", what, sockserv_strerror(rc), detail);
    return 1;
}

int main(void)
{
    static const char key[] = "installed key";
    static const char message[] = "hello from an installed sockserv";
    char header_version[32], addr[SOCKSERV_ADDRSTRLEN];
    sockserv_config *cfg = NULL;
    sockserv_server *srv = NULL;
    sockserv_conn *conn = NULL;
    const uint8_t *reply;
    size_t len;
    sockserv_result rc;
    int status = 1;

    /* The header and the library it runs with must agree. */
    snprintf(header_version, sizeof header_version, "%d.%d.%d", SOCKSERV_VERSION_MAJOR,
             SOCKSERV_VERSION_MINOR, SOCKSERV_VERSION_PATCH);
    if (strcmp(header_version, sockserv_version()) != 0) {
        fprintf(stderr, "consumer: header %s, library %s\n", header_version, sockserv_version());
        return 1;
    }
    if ((rc = sockserv_config_new(&cfg)))
        return fail("config", rc);
    if ((rc = sockserv_config_set_auth_key(cfg, (const uint8_t *)key, strlen(key))) ||
        (rc = sockserv_config_set_io_timeout_ms(cfg, 10000))) {
        status = fail("config", rc);
        goto out;
    }
    if ((rc = sockserv_server_new("tcp://127.0.0.1:0", cfg, &srv)) ||
        (rc = sockserv_server_set_handler(srv, echo, NULL)) ||
        (rc = sockserv_server_local_addr(srv, addr, sizeof addr, &len)) ||
        (rc = sockserv_server_start(srv))) {
        status = fail("server", rc);
        goto out;
    }
    if ((rc = sockserv_connect(addr, cfg, &conn)) ||
        (rc = sockserv_conn_send(conn, (const uint8_t *)message, strlen(message))) ||
        (rc = sockserv_conn_recv(conn, &reply, &len))) {
        status = fail("client", rc);
        goto out;
    }
    if (len != strlen(message) || memcmp(reply, message, len) != 0) {
        fprintf(stderr, "consumer: the echo differs\n");
        goto out;
    }
    printf("consumer: sockserv %s echoed \"%.*s\" over %s with a key\n", sockserv_version(),
           (int)len, (const char *)reply, addr);
    status = 0;
out:
    sockserv_conn_free(conn);
    sockserv_server_free(srv);
    sockserv_config_free(cfg);
    return status;
}
