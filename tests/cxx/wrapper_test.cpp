// sockserv.hpp exercised: RAII, byte views, exceptions and their nothrow
// twins, lambdas as threaded, verify and event handlers, exceptions caught
// at the C boundary, moves. Run by tests/packaging/cxx.rs, built with
// -std=c++17 -Wall -Wextra -Wpedantic -Werror by g++ and clang++.
//
// Every check is counted; a failed one prints its line and the run goes on,
// exiting 1 at the end. Every wait is bounded (WAIT).

#include "sockserv.hpp"

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

int main() {
    test_bytes_and_version();
    test_hmac();
    test_errors();
    test_threaded_server();
    test_exceptions_stay_in_cxx();
    test_event_server();
    test_destruction_order();
    std::printf("wrapper_test: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
