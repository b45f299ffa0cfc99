// sockserv.hpp exercised: RAII, byte views, exceptions and their nothrow
// twins, lambdas as threaded, verify and event handlers, exceptions caught
// at the C boundary, moves, socket options, non-blocking mode and flush,
// coalesced sends, the PROXY protocol, v6_only, datagram sockets and
// servers (plain, sealed, Unix), every statistic. Run by tests/packaging/cxx.rs, built with
// -std=c++17 -Wall -Wextra -Wpedantic -Werror by g++ and clang++.
//
// Every check is counted; a failed one prints its line and the run goes on,
// exiting 1 at the end. Every wait is bounded (WAIT).

#include "sockserv.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

static int checks, failures;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        ++checks;                                                                        \
        if (!(cond)) {                                                                   \
            ++failures;                                                                  \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                                \
    } while (0)

// Runs `body`, which must throw sockserv::error with `code`; returns it.
template <class F> static sockserv::error expect_error(sockserv_result code, F body, int line) {
    try {
        body();
    } catch (const sockserv::error &e) {
        ++checks;
        if (e.code() != code) {
            ++failures;
            std::fprintf(stderr, "line %d: expected code %d, got %d: %s\n", line, code, e.code(),
                         e.what());
        }
        return e;
    }
    ++checks;
    ++failures;
    std::fprintf(stderr, "line %d: expected sockserv::error %d, nothing thrown\n", line, code);
    return sockserv::error(code, "nothing");
}
#define EXPECT_ERROR(code, ...) expect_error(code, [&] { __VA_ARGS__; }, __LINE__)

static const auto WAIT = 10s;

template <class F> static bool wait_until(F cond) {
    auto end = std::chrono::steady_clock::now() + WAIT;
    while (std::chrono::steady_clock::now() < end) {
        if (cond())
            return true;
        std::this_thread::sleep_for(5ms);
    }
    return cond();
}

static bool contains(const std::string &s, const std::string &part) {
    return s.find(part) != std::string::npos;
}

static const char KEY[] = "c++ wrapper key";

static sockserv::config keyed(const char *key = KEY) {
    sockserv::config cfg;
    cfg.set_auth_key(key).set_io_timeout_ms(10000).set_handshake_timeout_ms(5000);
    return cfg;
}

// An echo handler through the nothrow receive: ends when the peer closes.
static void echo(sockserv::conn_ref c) {
    for (sockserv::bytes frame; c.recv(frame, std::nothrow) == SOCKSERV_OK;)
        c.send(frame);
}

static void test_bytes_and_version() {
    std::string s = "abc";
    std::vector<std::uint8_t> v = {1, 2, 3, 4};
    std::array<char, 2> a = {'x', 'y'};
    CHECK(sockserv::bytes("hello").size() == 5); // the literal's NUL is not sent
    CHECK(sockserv::bytes(s).as_string_view() == "abc");
    CHECK(sockserv::bytes(std::string_view("hi")).size() == 2);
    CHECK(sockserv::bytes(v).size() == 4 && sockserv::bytes(v).data()[3] == 4);
    CHECK(sockserv::bytes(a).to_string() == "xy");
    CHECK(sockserv::bytes(v.data(), 2).to_vector() == std::vector<std::uint8_t>({1, 2}));
    CHECK(sockserv::bytes(static_cast<const char *>(nullptr)).empty());
    char expected[32];
    std::snprintf(expected, sizeof expected, "%d.%d.%d", SOCKSERV_VERSION_MAJOR,
                  SOCKSERV_VERSION_MINOR, SOCKSERV_VERSION_PATCH);
    CHECK(sockserv::version() == expected);
}

static void test_hmac() {
    // RFC 4231, test case 2.
    auto mac = sockserv::hmac_sha256("Jefe", "what do ya want for nothing?");
    const std::uint8_t want[] = {0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24,
                                 0x26, 0x08, 0x95, 0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27,
                                 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43};
    CHECK(std::equal(mac.begin(), mac.end(), want));
    CHECK(sockserv::hmac_sha256_verify("Jefe", "what do ya want for nothing?", mac));
    mac[0] ^= 1;
    CHECK(!sockserv::hmac_sha256_verify("Jefe", "what do ya want for nothing?", mac));
}

static void test_errors() {
    // A port nobody listens on: bind one, note it, free the server.
    std::string closed_addr = sockserv::server("tcp://127.0.0.1:0").local_addr();
    auto e = EXPECT_ERROR(SOCKSERV_ERR_CONNECTION_REFUSED, sockserv::connection c(closed_addr));
    CHECK(contains(e.detail(), closed_addr));
    CHECK(contains(e.what(), "sockserv_connect"));
    CHECK(contains(e.what(), sockserv_strerror(SOCKSERV_ERR_CONNECTION_REFUSED)));

    // The nothrow twin: the code, the detail on this thread, no connection.
    sockserv::config cfg;
    sockserv::connection conn;
    CHECK(sockserv::connection::connect(closed_addr, cfg, conn, std::nothrow) ==
          SOCKSERV_ERR_CONNECTION_REFUSED);
    CHECK(!conn);
    CHECK(contains(sockserv::last_error(), closed_addr));
    CHECK(sockserv::connection::connect("tcp:/nonsense", cfg, conn, std::nothrow) ==
          SOCKSERV_ERR_INVALID_ADDRESS);

    EXPECT_ERROR(SOCKSERV_ERR_INVALID_ARGUMENT, cfg.set_auth_key(""));
    EXPECT_ERROR(SOCKSERV_ERR_INVALID_ARGUMENT, cfg.set_max_connections(0));
    EXPECT_ERROR(SOCKSERV_ERR_INVALID_ARGUMENT, cfg.set_max_pending_handshakes(0));
    cfg.set_max_pending_handshakes(4096);
    EXPECT_ERROR(SOCKSERV_ERR_INVALID_ADDRESS, sockserv::server s("nonsense://x"));

    // The address in use: nothrow bind says so and leaves `out` empty.
    sockserv::server first("tcp://127.0.0.1:0");
    sockserv::server second;
    CHECK(sockserv::server::bind(first.local_addr(), sockserv::config().set_reuse_address(false),
                                 second, std::nothrow) == SOCKSERV_ERR_ADDRESS_IN_USE);
    CHECK(!second);

    // Exceptions copy without throwing and keep their detail.
    sockserv::error copy = e;
    CHECK(copy.detail() == e.detail() && copy.code() == e.code());
}

static void test_threaded_server() {
    std::atomic<int> handled{0};
    std::mutex peers_lock;
    std::vector<std::string> peers;
    sockserv::server srv("tcp://127.0.0.1:0", keyed());
    srv.on_verify([&](std::string_view peer) {
           std::lock_guard<std::mutex> hold(peers_lock);
           peers.emplace_back(peer);
           return true;
       })
        .on_connection([&](sockserv::conn_ref c) {
            echo(c);
            handled++;
        });
    srv.start();
    std::string addr = srv.local_addr();

    {
        sockserv::connection c(addr, keyed());
        c.send("hello");
        CHECK(c.recv_string() == "hello");
        std::string big(100000, 'z');
        c.send(big);
        CHECK(c.recv().as_string_view() == big);
        // recv_into: too small first, then the size it asked for.
        c.send("0123456789");
        std::uint8_t small[4];
        std::size_t len = 0;
        CHECK(c.poll(5000));
        CHECK(c.recv_into(small, sizeof small, len, std::nothrow) == SOCKSERV_ERR_INSUFFICIENT_SIZE);
        CHECK(len == 10);
        std::vector<std::uint8_t> room(len);
        CHECK(c.recv_into(room.data(), room.size()) == 10);
        CHECK(sockserv::bytes(room).as_string_view() == "0123456789");
        CHECK(c.peer_addr() == addr);
        CHECK(contains(c.local_addr(), "tcp://127.0.0.1:"));
        // No TLS on this connection.
        EXPECT_ERROR(SOCKSERV_ERR_INVALID_STATE, c.peer_cert_sha256());
        EXPECT_ERROR(SOCKSERV_ERR_INVALID_STATE, c.peer_cert_subject());
        EXPECT_ERROR(SOCKSERV_ERR_INVALID_STATE, c.tls_version());
        CHECK(c.fd() >= 0);
        CHECK(c.timeout_ms() == 10000);
        c.set_nodelay(false);
        CHECK(!c.nodelay());
        int mark = 7;
        c.set_userdata(&mark);
        CHECK(c.userdata() == &mark);
        // Nothing to read: poll says so, the nothrow receive times out.
        c.set_timeout_ms(50);
        CHECK(!c.poll(0));
        sockserv::bytes frame;
        CHECK(c.recv(frame, std::nothrow) == SOCKSERV_ERR_TIMED_OUT);
        // Moves keep the connection; the moved-from one is empty.
        sockserv::connection moved = std::move(c);
        CHECK(!c && moved);
        CHECK(moved.send("after move", std::nothrow) == SOCKSERV_OK);
        moved.set_timeout_ms(10000);
        CHECK(moved.recv_string() == "after move");
    }
    CHECK(wait_until([&] { return handled == 1; }));

    // A wrong key: the constructor throws AUTH_FAILED, naming the address.
    auto e = EXPECT_ERROR(SOCKSERV_ERR_AUTH_FAILED, sockserv::connection c(addr, keyed("wrong")));
    CHECK(contains(e.detail(), addr));
    CHECK(wait_until([&] { return srv.stats().handshake_failures == 1; }));

    // The handler cannot change once the server runs; the old one stays.
    EXPECT_ERROR(SOCKSERV_ERR_INVALID_STATE, srv.on_connection([](sockserv::conn_ref) {}));
    sockserv::connection again(addr, keyed());
    again.send("still echoing");
    CHECK(again.recv_string() == "still echoing");

    // A moved server keeps serving through its new owner.
    sockserv::server owner = std::move(srv);
    CHECK(!srv && owner);
    again.send("after the server moved");
    CHECK(again.recv_string() == "after the server moved");
    std::lock_guard<std::mutex> hold(peers_lock);
    CHECK(peers.size() == 3);
    CHECK(owner.stats().accepted == 3);
}

static void test_exceptions_stay_in_cxx() {
    std::mutex lock;
    std::vector<std::string> caught;
    std::atomic<bool> refuse_next{false};
    sockserv::server srv("tcp://127.0.0.1:0", keyed());
    srv.on_exception([&](std::exception_ptr e) {
           try {
               std::rethrow_exception(e);
           } catch (const std::exception &ex) {
               std::lock_guard<std::mutex> hold(lock);
               caught.emplace_back(ex.what());
           }
       })
        .on_verify([&](std::string_view) -> bool {
            if (refuse_next.exchange(false))
                throw std::runtime_error("verify blew up");
            return true;
        })
        .on_connection([](sockserv::conn_ref c) {
            if (c.recv_string() == "throw")
                throw std::runtime_error("handler blew up");
            echo(c);
        });
    srv.start();
    std::string addr = srv.local_addr();

    {
        sockserv::connection c(addr, keyed());
        c.send("throw");
        // The handler threw; the server closed the connection after it.
        sockserv::bytes frame;
        CHECK(c.recv(frame, std::nothrow) == SOCKSERV_ERR_CLOSED);
    }
    // A verify that throws refuses the peer.
    refuse_next = true;
    sockserv::connection refused;
    CHECK(sockserv::connection::connect(addr, keyed(), refused, std::nothrow) != SOCKSERV_OK);
    CHECK(wait_until([&] { return srv.stats().refused_by_verify == 1; }));

    // And the server goes on.
    sockserv::connection c(addr, keyed());
    c.send("first");
    c.send("second");
    CHECK(c.recv_string() == "second");

    std::lock_guard<std::mutex> hold(lock);
    CHECK(caught.size() == 2);
    CHECK(caught.size() == 2 && caught[0] == "handler blew up" && caught[1] == "verify blew up");
}

static void test_event_server() {
    std::atomic<int> opened{0}, closed{0}, frames{0}, exceptions{0};
    std::mutex lock;
    std::vector<sockserv_result> reasons;
    sockserv::config cfg = keyed();
    cfg.set_io_threads(2);
    sockserv::server srv("tcp://127.0.0.1:0", cfg);
    srv.on_exception([&](std::exception_ptr) { exceptions++; })
        .on_events([&](sockserv::conn_ref) { opened++; },
                   [&](sockserv::conn_ref c, sockserv::bytes frame) {
                       frames++;
                       if (frame.as_string_view() == "boom")
                           throw std::logic_error("on_frame blew up");
                       c.send(frame); // queued, never blocks
                   },
                   [&](sockserv::conn_ref, sockserv_result reason) {
                       std::lock_guard<std::mutex> hold(lock);
                       reasons.push_back(reason);
                       closed++;
                   });
    srv.start();
    std::string addr = srv.local_addr();
    {
        sockserv::connection c(addr, keyed());
        for (int i = 0; i < 100; i++)
            c.send(std::to_string(i));
        bool in_order = true;
        for (int i = 0; i < 100; i++)
            in_order = in_order && c.recv_string() == std::to_string(i);
        CHECK(in_order);
        // An exception from on_frame closes that connection only.
        c.send("boom");
        sockserv::bytes frame;
        CHECK(c.recv(frame, std::nothrow) == SOCKSERV_ERR_CLOSED);
    }
    CHECK(wait_until([&] { return closed == 1; }));
    CHECK(exceptions == 1);
    {
        // Callbacks may be left out (nullptr): here, only on_frame.
        sockserv::server quiet("tcp://127.0.0.1:0");
        quiet.on_events(nullptr, [](sockserv::conn_ref c, sockserv::bytes f) { c.send(f); }, nullptr);
        quiet.start();
        sockserv::connection q(quiet.local_addr());
        q.send("quiet");
        CHECK(q.recv_string() == "quiet");
    }
    sockserv::connection other(addr, keyed());
    other.send("still serving");
    CHECK(other.recv_string() == "still serving");
    CHECK(opened == 2);
    CHECK(frames == 102);
    std::lock_guard<std::mutex> hold(lock);
    // Closed by sockserv_conn_close after the exception: reason OK.
    CHECK(reasons.size() == 1 && reasons[0] == SOCKSERV_OK);
}

// conn_handle: a worker keeps a counted reference past on_close (issue 10,
// finding 7). The send after the peer left gets SOCKSERV_ERR_CLOSED, never a
// use-after-free; copies and moves keep the count right (ASan would see a
// double release).
static void test_retained_event_handle() {
    std::mutex lock;
    std::vector<sockserv::conn_handle> kept;
    std::atomic<int> closed{0};
    sockserv::server srv("tcp://127.0.0.1:0", keyed());
    srv.on_events(
        [&](sockserv::conn_ref c) {
            std::lock_guard<std::mutex> hold(lock);
            kept.emplace_back(c);
        },
        [](sockserv::conn_ref c, sockserv::bytes f) { c.send(f); },
        [&](sockserv::conn_ref, sockserv_result) { closed++; });
    srv.start();
    {
        sockserv::connection c(srv.local_addr(), keyed());
        c.send("hello");
        CHECK(c.recv_string() == "hello");
        // Live: a worker's send through the handle reaches the peer.
        sockserv::conn_handle h;
        CHECK(wait_until([&] {
            std::lock_guard<std::mutex> hold(lock);
            return kept.size() == 1;
        }));
        {
            std::lock_guard<std::mutex> hold(lock);
            h = kept[0]; // a copy: two references now
        }
        std::thread([h] { h.send("from a worker"); }).join();
        CHECK(c.recv_string() == "from a worker");
    }
    CHECK(wait_until([&] { return closed == 1; }));
    sockserv::conn_handle moved;
    {
        std::lock_guard<std::mutex> hold(lock);
        moved = std::move(kept[0]);
        CHECK(!kept[0]);
    }
    sockserv_result rc = SOCKSERV_OK;
    std::thread([&] { rc = moved.send("too late", std::nothrow); }).join();
    CHECK(rc == SOCKSERV_ERR_CLOSED);
    EXPECT_ERROR(SOCKSERV_ERR_CLOSED, moved.send("too late"));
    EXPECT_ERROR(SOCKSERV_ERR_CLOSED, moved.fd());
    CHECK(!moved.peer_addr().empty()); // the handle's own memory stays readable
    moved.reset();
    CHECK(!moved);
}

// The server is freed before its callbacks: destroying a server with a live
// connection runs on_close (SHUTDOWN) while the lambdas still exist.
static void test_destruction_order() {
    std::atomic<int> shutdowns{0};
    std::string addr;
    sockserv::connection c;
    {
        sockserv::server srv("tcp://127.0.0.1:0");
        srv.on_events([](sockserv::conn_ref) {}, nullptr, [&](sockserv::conn_ref, sockserv_result r) {
            if (r == SOCKSERV_ERR_SHUTDOWN)
                shutdowns++;
        });
        srv.start();
        c = sockserv::connection(srv.local_addr());
        c.send("x");
        CHECK(wait_until([&] { return srv.stats().active == 1; }));
    }
    CHECK(shutdowns == 1);
}


// The port of "tcp://127.0.0.1:PORT" / "udp://...:PORT".
static int port_of(const std::string &addr) { return std::stoi(addr.substr(addr.rfind(':') + 1)); }

// A plain TCP socket connected to 127.0.0.1:port, or -1.
static int raw_connect(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

static bool write_all(int fd, const std::string &s) {
    return ::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size());
}

// Reads until end of stream (bounded by WAIT); true if it came.
static bool reaches_eof(int fd) {
    auto end = std::chrono::steady_clock::now() + WAIT;
    char buf[256];
    while (std::chrono::steady_clock::now() < end) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 100) > 0) {
            ssize_t n = ::read(fd, buf, sizeof buf);
            if (n <= 0)
                return true;
        }
    }
    return false;
}

static void test_config_setters_and_errors() {
    sockserv::config cfg;
    cfg.set_v6_only(true)
        .set_coalesce_sends(true)
        .set_proxy_protocol(SOCKSERV_PROXY_OPTIONAL)
        .set_max_datagram_size(SOCKSERV_MAX_DATAGRAM_SIZE)
        .set_datagram_window_ms(1000)
        .set_datagram_replay_capacity(16);
    EXPECT_ERROR(SOCKSERV_ERR_INVALID_ARGUMENT, cfg.set_proxy_protocol(7));
    EXPECT_ERROR(SOCKSERV_ERR_INVALID_ARGUMENT, cfg.set_max_datagram_size(SOCKSERV_MAX_DATAGRAM_SIZE + 1));
    EXPECT_ERROR(SOCKSERV_ERR_INVALID_ARGUMENT, cfg.set_datagram_window_ms(0));
    EXPECT_ERROR(SOCKSERV_ERR_INVALID_ARGUMENT, cfg.set_datagram_replay_capacity(0));
    // TLS settings: checked when set (minimal; no TLS peer here).
    EXPECT_ERROR(SOCKSERV_ERR_INVALID_ARGUMENT, cfg.set_tls_cert("junk", "junk"));
    EXPECT_ERROR(SOCKSERV_ERR_IO, cfg.set_tls_cert_files("/nonexistent/c.pem", "/nonexistent/k.pem"));
    EXPECT_ERROR(SOCKSERV_ERR_INVALID_ARGUMENT, cfg.set_tls_ca("junk"));
    EXPECT_ERROR(SOCKSERV_ERR_IO, cfg.set_tls_ca_file("/nonexistent/ca.pem"));
    cfg.set_tls_server_name("db.example")
        .set_tls_client_auth(SOCKSERV_TLS_CLIENT_AUTH_NONE)
        .add_tls_alpn("sockserv/1")
        .set_tls_min_version(SOCKSERV_TLS_VERSION_1_3)
        .set_tls(false);
    // clear_error forgets the detail of the last failure.
    CHECK(!sockserv::last_error().empty());
    sockserv::clear_error();
    CHECK(sockserv::last_error().empty());
}

static void test_options_and_serve() {
    // serve() on this thread; a handler shuts the server down.
    sockserv::server srv("tcp://127.0.0.1:0", keyed());
    srv.on_connection([&](sockserv::conn_ref c) {
        c.send(std::to_string(c.option(SOCKSERV_OPT_KEEPALIVE)));
        srv.shutdown();
    });
    std::string addr = srv.local_addr();
    std::thread client([&] {
        sockserv::connection c(addr, keyed());
        c.set_option(SOCKSERV_OPT_KEEPALIVE, 1);
        CHECK(c.option(SOCKSERV_OPT_KEEPALIVE) == 1);
        c.set_option(SOCKSERV_OPT_KEEPALIVE_IDLE, 30);
        CHECK(c.option(SOCKSERV_OPT_KEEPALIVE_IDLE) == 30);
        c.set_option(SOCKSERV_OPT_KEEPALIVE_INTERVAL, 7);
        CHECK(c.option(SOCKSERV_OPT_KEEPALIVE_INTERVAL) == 7);
        c.set_option(SOCKSERV_OPT_KEEPALIVE_COUNT, 3);
        CHECK(c.option(SOCKSERV_OPT_KEEPALIVE_COUNT) == 3);
        c.set_keepalive(true, 40, 8, 4);
        CHECK(c.option(SOCKSERV_OPT_KEEPALIVE_IDLE) == 40);
        c.set_option(SOCKSERV_OPT_RCVBUF, 65536);
        CHECK(c.option(SOCKSERV_OPT_RCVBUF) >= 65536);
        c.set_option(SOCKSERV_OPT_SNDBUF, 65536);
        CHECK(c.option(SOCKSERV_OPT_SNDBUF) >= 65536);
        c.set_option(SOCKSERV_OPT_LINGER, 2);
        CHECK(c.option(SOCKSERV_OPT_LINGER) == 2);
        c.set_option(SOCKSERV_OPT_LINGER, -1);
        CHECK(c.option(SOCKSERV_OPT_LINGER) == -1);
        c.set_option(SOCKSERV_OPT_NODELAY, 0);
        CHECK(c.option(SOCKSERV_OPT_NODELAY) == 0 && !c.nodelay());
        EXPECT_ERROR(SOCKSERV_ERR_INVALID_ARGUMENT, c.set_option(99, 1));
        EXPECT_ERROR(SOCKSERV_ERR_INVALID_ARGUMENT, (void)c.option(99));
        CHECK(!c.nonblocking());
        // The server's end has keepalive off (the config's default).
        CHECK(c.recv_string() == "0");
        c.flush(); // nothing held: returns at once
    });
    srv.serve(); // returns after the handler's shutdown
    client.join();
    CHECK(srv.stat(SOCKSERV_STAT_ACCEPTED) == 1);
    // A second serve is refused: a server serves once.
    CHECK(srv.serve(std::nothrow) != SOCKSERV_OK);
}

// Non-blocking mode: a receive with nothing ready and a send the kernel
// cannot take say WOULD_BLOCK at once; flush finishes a frame the kernel
// took part of; nothing is torn.
static void test_nonblocking_and_flush() {
    std::atomic<bool> go{false};
    sockserv::server srv("tcp://127.0.0.1:0", keyed());
    srv.on_connection([&](sockserv::conn_ref c) {
        if (!wait_until([&] { return go.load(); }))
            return;
        // Answers each frame with its size.
        for (sockserv::bytes frame; c.recv(frame, std::nothrow) == SOCKSERV_OK;)
            c.send(std::to_string(frame.size()));
    });
    srv.start();
    sockserv::connection c(srv.local_addr(), keyed());
    c.set_nonblocking(true);
    CHECK(c.nonblocking());
    auto t0 = std::chrono::steady_clock::now();
    sockserv::bytes frame;
    CHECK(c.recv(frame, std::nothrow) == SOCKSERV_ERR_WOULD_BLOCK);
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);

    const std::string big(4 << 20, 'b');
    int sent = 0;
    sockserv_result rc = SOCKSERV_OK;
    for (int i = 0; i < 64 && rc == SOCKSERV_OK; i++) {
        rc = c.send(big, std::nothrow);
        if (rc == SOCKSERV_OK)
            sent++;
    }
    CHECK(rc == SOCKSERV_ERR_WOULD_BLOCK);
    CHECK(sent >= 1);
    go = true;
    // Flush what is left, waiting for POLLOUT, within WAIT.
    auto end = std::chrono::steady_clock::now() + WAIT;
    while ((rc = c.flush(std::nothrow)) == SOCKSERV_ERR_WOULD_BLOCK &&
           std::chrono::steady_clock::now() < end) {
        pollfd p{c.fd(), POLLOUT, 0};
        ::poll(&p, 1, 100);
    }
    CHECK(rc == SOCKSERV_OK);
    c.set_nonblocking(false);
    bool all_whole = true;
    for (int i = 0; i < sent; i++)
        all_whole = all_whole && c.recv_string() == std::to_string(big.size());
    CHECK(all_whole);
    // Nothing more: the refused send sent nothing.
    c.set_timeout_ms(200);
    CHECK(c.recv(frame, std::nothrow) == SOCKSERV_ERR_TIMED_OUT);
}

// Coalesced sends: pipelined requests, replies in order, on both ends.
static void test_coalesced_sends() {
    sockserv::config cfg = keyed();
    cfg.set_coalesce_sends(true);
    sockserv::server srv("tcp://127.0.0.1:0", cfg);
    srv.on_connection(echo);
    srv.start();
    sockserv::connection c(srv.local_addr(), cfg);
    for (int i = 0; i < 200; i++)
        c.send(std::to_string(i));
    c.flush();
    bool in_order = true;
    for (int i = 0; i < 200; i++)
        in_order = in_order && c.recv_string() == std::to_string(i);
    CHECK(in_order);
}

// PROXY protocol: the header names the client; a malformed one is counted.
static void test_proxy_protocol() {
    sockserv::config cfg = keyed();
    cfg.set_proxy_protocol(SOCKSERV_PROXY_REQUIRED);
    sockserv::server srv("tcp://127.0.0.1:0", cfg);
    srv.on_connection([](sockserv::conn_ref c) { c.send(c.peer_addr()); });
    srv.start();
    int port = port_of(srv.local_addr());

    // A client behind a "load balancer": the header, then the handshake
    // over the same socket (from_fd adopts it). 192.0.2.1 is only named.
    int fd = raw_connect(port);
    CHECK(fd >= 0);
    CHECK(write_all(fd, "PROXY TCP4 192.0.2.1 127.0.0.1 5555 " + std::to_string(port) + "\r\n"));
    sockserv::connection c = sockserv::connection::from_fd(fd, keyed(), SOCKSERV_ROLE_CLIENT);
    CHECK(c.recv_string() == "tcp://192.0.2.1:5555");

    int bad = raw_connect(port);
    CHECK(bad >= 0);
    CHECK(write_all(bad, "GET / HTTP/1.0\r\n\r\n"));
    CHECK(reaches_eof(bad));
    ::close(bad);
    CHECK(wait_until([&] { return srv.stats().proxy_failures == 1; }));
    // Every counter, read at once: one connection served, one refused.
    CHECK(wait_until([&] { return srv.stats().handled == 1 && srv.stat(SOCKSERV_STAT_ACTIVE) == 0; }));
    sockserv::server_stats st = srv.stats();
    CHECK(st.accepted == 2 && st.handled == 1 && st.proxy_failures == 1);
    CHECK(st.refused_by_verify == 0 && st.refused_when_full == 0 && st.handshake_failures == 0);
    CHECK(srv.stat(SOCKSERV_STAT_ACTIVE) == 0);
}

// v6_only: an IPv6 wildcard listener with it on takes no IPv4 clients.
static void test_v6_only() {
    sockserv::server v6;
    sockserv::config only;
    only.set_v6_only(true);
    if (sockserv::server::bind("tcp://[::]:0", only, v6, std::nothrow) != SOCKSERV_OK) {
        std::printf("wrapper_test: SKIPPED v6_only: no IPv6 here (%s)\n", sockserv::last_error().c_str());
        return;
    }
    v6.on_connection(echo);
    v6.start();
    int port = port_of(v6.local_addr());
    sockserv::connection c6("tcp://[::1]:" + std::to_string(port));
    c6.send("six");
    CHECK(c6.recv_string() == "six");
    sockserv::connection c4;
    CHECK(sockserv::connection::connect("tcp://127.0.0.1:" + std::to_string(port), sockserv::config(), c4,
                                        std::nothrow) == SOCKSERV_ERR_CONNECTION_REFUSED);

    sockserv::config both;
    both.set_v6_only(false);
    sockserv::server dual("tcp://[::]:0", both);
    dual.on_connection(echo);
    dual.start();
    sockserv::connection mapped("tcp://127.0.0.1:" + std::to_string(port_of(dual.local_addr())));
    mapped.send("four");
    CHECK(mapped.recv_string() == "four");
}

static std::string upper(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char ch) { return std::toupper(ch); });
    return out;
}

static void test_datagram_server() {
    std::atomic<int> exceptions{0};
    sockserv::config cfg = keyed();
    cfg.set_max_datagram_size(1000);
    sockserv::dgram_server srv("udp://127.0.0.1:0", cfg);
    srv.on_exception([&](std::exception_ptr) { exceptions++; })
        .on_datagram([](sockserv::dgram_ref sock, sockserv::bytes data, std::string_view from) {
            if (data.as_string_view() == "throw")
                throw std::runtime_error("datagram handler blew up");
            sock.send_to(std::string(from), upper(data.as_string_view()));
        });
    srv.start();
    std::string addr = srv.local_addr();
    CHECK(contains(addr, "udp://127.0.0.1:"));
    // Datagrams go to the handler: the server's socket does not receive.
    std::string from;
    std::uint8_t buf[64];
    std::size_t len = 0;
    CHECK(srv.socket().recv_from(buf, sizeof buf, len, from, std::nothrow) == SOCKSERV_ERR_INVALID_STATE);

    // A connected client, sealed with the same key.
    sockserv::dgram c = sockserv::dgram::connect(addr, cfg);
    c.set_timeout_ms(5000);
    CHECK(c.timeout_ms() == 5000);
    CHECK(c.fd() >= 0);
    CHECK(contains(c.local_addr(), "udp://127.0.0.1:"));
    c.send("hello");
    CHECK(c.recv_string() == "HELLO");
    // Too small a buffer: the size it needs, and the datagram stays queued.
    c.send("abcdefgh");
    CHECK(c.recv_into(buf, 4, len, std::nothrow) == SOCKSERV_ERR_INSUFFICIENT_SIZE);
    CHECK(len == 8);
    CHECK(c.recv_into(buf, sizeof buf) == 8);
    CHECK(sockserv::bytes(buf, 8).as_string_view() == "ABCDEFGH");
    // Over the maximum: nothing sent.
    auto e = EXPECT_ERROR(SOCKSERV_ERR_DATAGRAM_TOO_LARGE, c.send(std::string(1001, 'x')));
    CHECK(contains(e.detail(), "1001"));

    // An unbound socket: no address until its first send.
    sockserv::dgram u = sockserv::dgram::open(nullptr, cfg);
    EXPECT_ERROR(SOCKSERV_ERR_INVALID_STATE, (void)u.local_addr());
    u.set_timeout_ms(5000);
    u.send_to(addr, "from anywhere");
    sockserv::datagram d = u.recv_from();
    CHECK(d.as_string_view() == "FROM ANYWHERE");
    CHECK(d.from == addr);
    CHECK(contains(u.local_addr(), "udp://"));
    // send() needs a connected socket.
    EXPECT_ERROR(SOCKSERV_ERR_INVALID_STATE, u.send("nowhere"));

    // A wrong key: dropped by the server and counted; no reply.
    sockserv::dgram wrong = sockserv::dgram::connect(addr, keyed("wrong"));
    wrong.set_timeout_ms(200);
    wrong.send("let me in");
    CHECK(wrong.recv_into(buf, sizeof buf, len, std::nothrow) == SOCKSERV_ERR_TIMED_OUT);
    CHECK(wait_until([&] { return srv.stats().bad_tag == 1; }));

    // An exception in the handler is reported; the server goes on.
    c.send("throw");
    CHECK(wait_until([&] { return exceptions == 1; }));
    c.send("still here");
    CHECK(c.recv_string() == "STILL HERE");

    // The server counts a datagram once its handler returned, a reply
    // once sent: the client may have the reply first.
    CHECK(wait_until([&] {
        auto st = srv.stats();
        return st.sent == 4 && st.received == 5;
    }));
    sockserv::dgram_stats s = srv.stats();
    CHECK(s.received == 5 && s.sent == 4);
    CHECK(s.bad_tag == 1 && s.too_short == 0 && s.replayed == 0 && s.too_large == 0);
    CHECK(c.stats().sent == 4 && c.stats().received == 3);
    CHECK(c.stat(SOCKSERV_DGRAM_STAT_SENT) == 4);
    // A moved server keeps its handler and socket.
    sockserv::dgram_server moved = std::move(srv);
    CHECK(!srv && moved);
    c.send("moved");
    CHECK(c.recv_string() == "MOVED");
}

// Sealed datagrams on the wire: the overhead, a replay refused, a forged
// or short one dropped, each counted.
static void test_sealed_datagrams() {
    sockserv::config cfg = keyed();
    // A plain socket sees the sealed bytes as they travel.
    sockserv::dgram tap = sockserv::dgram::open("udp://127.0.0.1:0");
    tap.set_timeout_ms(5000);
    sockserv::dgram sender = sockserv::dgram::open(nullptr, cfg);
    sender.send_to(tap.local_addr(), "sealed payload");
    sockserv::datagram wire = tap.recv_from();
    CHECK(wire.data.size() == std::strlen("sealed payload") + SOCKSERV_DATAGRAM_OVERHEAD);
    CHECK(wire.as_string_view().find("sealed payload") != std::string_view::npos);

    std::atomic<int> delivered{0};
    sockserv::dgram_server srv("udp://127.0.0.1:0", cfg);
    srv.on_datagram([&](sockserv::dgram_ref, sockserv::bytes data, std::string_view) {
        if (data.as_string_view() == "sealed payload")
            delivered++;
    });
    srv.start();
    std::string addr = srv.local_addr();
    tap.send_to(addr, wire.data);
    tap.send_to(addr, wire.data); // the replay
    std::vector<std::uint8_t> forged = wire.data;
    forged.back() ^= 1;
    tap.send_to(addr, forged);
    tap.send_to(addr, sockserv::bytes(wire.data.data(), 10));
    CHECK(wait_until([&] {
        auto s = srv.stats();
        return s.replayed == 1 && s.bad_tag == 1 && s.too_short == 1;
    }));
    CHECK(delivered == 1);
    sockserv::dgram_stats s = srv.stats();
    CHECK(s.received == 1 && s.bad_version == 0 && s.too_old == 0 && s.too_new == 0);
}

// Unix datagrams, and a server served on this thread until its handler
// shuts it down.
static void test_unix_datagrams() {
    char tmpl[] = "/tmp/sockserv-cxx-XXXXXX";
    if (!::mkdtemp(tmpl)) {
        std::perror("mkdtemp");
        CHECK(false);
        return;
    }
    std::string path = std::string(tmpl) + "/d.sock";
    {
        sockserv::dgram_server srv("unixgram://" + path);
        CHECK(srv.local_addr() == "unixgram://" + path);
        srv.on_datagram([&](sockserv::dgram_ref sock, sockserv::bytes data, std::string_view from) {
            if (data.as_string_view() == "stop") {
                srv.shutdown();
                return;
            }
            sock.send_to(std::string(from), data);
        });
        std::atomic<bool> served{false};
        std::thread client([&] {
            sockserv::dgram c = sockserv::dgram::open(); // autobound on its first send
            c.set_timeout_ms(5000);
            c.send_to("unixgram://" + path, "unix hello");
            sockserv::datagram d = c.recv_from();
            CHECK(d.as_string_view() == "unix hello");
            CHECK(d.from == "unixgram://" + path);
            CHECK(contains(c.local_addr(), "unixgram://@"));
            for (int i = 0; i < 100 && !served; i++) {
                c.send_to("unixgram://" + path, "stop");
                std::this_thread::sleep_for(50ms);
            }
        });
        srv.serve();
        served = true;
        client.join();
        CHECK(srv.stats().received >= 2);
    }
    // The socket file went with the server.
    CHECK(::access(path.c_str(), F_OK) != 0);
    ::rmdir(tmpl);
}

// Every config setter, each with an effect seen where one is quick to see.
static void test_every_config_setter() {
    // Key rotation: the server accepts the old key and the new; clearing
    // the keys means plain framing.
    sockserv::config srv_cfg = keyed("new key");
    srv_cfg.add_auth_key("old key").set_max_frame_size(100).set_backlog(16).set_reuse_port(true);
    sockserv::server srv("tcp://127.0.0.1:0", srv_cfg);
    srv.on_connection(echo);
    srv.start();
    sockserv::connection old_client(srv.local_addr(), keyed("old key"));
    old_client.send("rotated");
    CHECK(old_client.recv_string() == "rotated");
    // A frame over the server's maximum: it closes the connection.
    old_client.send(std::string(101, 'x'));
    sockserv::bytes frame;
    CHECK(old_client.recv(frame, std::nothrow) == SOCKSERV_ERR_CLOSED);
    sockserv::config plain = keyed();
    plain.clear_auth_keys();
    sockserv::server open_srv("tcp://127.0.0.1:0", plain);
    open_srv.on_connection(echo);
    open_srv.start();
    sockserv::connection anyone(open_srv.local_addr());
    anyone.send("no key");
    CHECK(anyone.recv_string() == "no key");

    // Client settings show on the connection.
    sockserv::config client_cfg;
    client_cfg.set_nodelay(false).set_keepalive(true).set_connect_timeout_ms(2000);
    sockserv::connection tuned(open_srv.local_addr(), client_cfg);
    CHECK(!tuned.nodelay());
    CHECK(tuned.option(SOCKSERV_OPT_KEEPALIVE) == 1);

    // Full: one connection at most, the next refused at once.
    sockserv::config full_cfg;
    full_cfg.set_max_connections(1).set_when_full(SOCKSERV_WHEN_FULL_REFUSE);
    sockserv::server full("tcp://127.0.0.1:0", full_cfg);
    full.on_connection(echo);
    full.start();
    sockserv::connection first(full.local_addr());
    first.send("first");
    CHECK(first.recv_string() == "first");
    sockserv::connection second(full.local_addr());
    second.set_timeout_ms(5000);
    CHECK(second.recv(frame, std::nothrow) == SOCKSERV_ERR_CLOSED);
    CHECK(wait_until([&] { return full.stats().refused_when_full == 1; }));

    // Event mode: an idle connection is closed with TIMED_OUT.
    std::atomic<int> timed_out{0};
    sockserv::config ev_cfg;
    ev_cfg.set_io_threads(1).set_idle_timeout_ms(100).set_max_queued_bytes(1 << 16).set_close_when_backed_up(true);
    sockserv::server ev("tcp://127.0.0.1:0", ev_cfg);
    ev.on_events(nullptr, nullptr, [&](sockserv::conn_ref, sockserv_result r) {
        if (r == SOCKSERV_ERR_TIMED_OUT)
            timed_out++;
    });
    ev.start();
    sockserv::connection idle(ev.local_addr());
    CHECK(wait_until([&] { return timed_out == 1; }));
}

// The process-wide refusal log: a wrong key is logged with the client's
// address, the code and the detail before the client sees #FAILURE#.
static std::mutex refusal_mutex;
static std::vector<std::string> refusal_peers, refusal_details;
static std::vector<sockserv_result> refusal_codes;

static void record_refusal(std::string_view peer, sockserv_result code, std::string_view detail) {
    std::lock_guard<std::mutex> lock(refusal_mutex);
    refusal_peers.emplace_back(peer);
    refusal_codes.push_back(code);
    refusal_details.emplace_back(detail);
    throw std::runtime_error("caught at the boundary");
}

static std::size_t refusals() {
    std::lock_guard<std::mutex> lock(refusal_mutex);
    return refusal_codes.size();
}

static void test_refusal_log() {
    sockserv::set_refusal_log(record_refusal);
    sockserv::server srv("tcp://127.0.0.1:0", keyed());
    srv.on_connection(echo);
    srv.start();
    sockserv::connection conn;
    CHECK(sockserv::connection::connect(srv.local_addr(), keyed("wrong key"), conn, std::nothrow) ==
          SOCKSERV_ERR_AUTH_FAILED);
    CHECK(refusals() == 1);
    {
        std::lock_guard<std::mutex> lock(refusal_mutex);
        CHECK(!refusal_codes.empty() && refusal_codes[0] == SOCKSERV_ERR_AUTH_FAILED);
        CHECK(!refusal_peers.empty() && contains(refusal_peers[0], "tcp://127.0.0.1:"));
        CHECK(!refusal_details.empty() && contains(refusal_details[0], "handshake"));
    }
    CHECK(srv.stats().handshake_failures == 1);
    // Removed: the next refusal reaches nobody.
    sockserv::set_refusal_log(nullptr);
    CHECK(sockserv::connection::connect(srv.local_addr(), keyed("wrong key"), conn, std::nothrow) ==
          SOCKSERV_ERR_AUTH_FAILED);
    CHECK(wait_until([&] { return srv.stats().handshake_failures == 2; }));
    CHECK(refusals() == 1);
}

int main() {
    test_bytes_and_version();
    test_hmac();
    test_errors();
    test_threaded_server();
    test_exceptions_stay_in_cxx();
    test_event_server();
    test_retained_event_handle();
    test_destruction_order();
    test_config_setters_and_errors();
    test_every_config_setter();
    test_options_and_serve();
    test_nonblocking_and_flush();
    test_coalesced_sends();
    test_proxy_protocol();
    test_v6_only();
    test_datagram_server();
    test_sealed_datagrams();
    test_unix_datagrams();
    test_refusal_log();
    std::printf("wrapper_test: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
