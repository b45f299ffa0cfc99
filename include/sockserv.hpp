/*
 * sockserv.hpp: a header-only C++17 wrapper over sockserv.h.
 *
 * - RAII: sockserv::config, sockserv::server and sockserv::connection own
 *   their C handle and free it in their destructor; they move, never copy.
 *   sockserv::conn_ref is a borrowed connection (what handlers receive).
 * - Buffers: sockserv::bytes, a pointer and a size, made from a string,
 *   string_view, vector, array or (pointer, size).
 * - Callbacks are any callables (lambdas), reached through C trampolines
 *   (userdata points at the server's callback table). An exception thrown
 *   by one is caught at the boundary, never thrown through C, and given to
 *   the server's exception handler (default: printed to stderr).
 * - Errors: a failed call throws sockserv::error, which carries the code and
 *   the detail from sockserv_last_error. Calls that can fail at run time
 *   (bind, serve, connect, send, receive, poll) have a noexcept twin that
 *   takes std::nothrow as its last argument, returns the sockserv_result and
 *   writes its outputs through reference parameters, only on success.
 *
 * Thread rules are the C API's (see sockserv.h and docs/threading.md): a
 * threaded handler runs on its connection's thread, the verify callback on
 * the accept thread, event callbacks on the connection's I/O thread.
 */

#ifndef SOCKSERV_HPP
#define SOCKSERV_HPP

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "sockserv.hpp needs C++17 (use sockserv.h from C or older C++)"
#endif

#include "sockserv.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace sockserv {

/// The detail of the calling thread's last failure (sockserv_last_error).
inline std::string last_error() {
    // sockserv_last_error returns the full length, like snprintf: ask, then copy.
    std::vector<char> buf(sockserv_last_error(nullptr, 0) + 1);
    sockserv_last_error(buf.data(), buf.size());
    return std::string(buf.data());
}

/// The library's version, "MAJOR.MINOR.PATCH" (the header's is in the
/// SOCKSERV_VERSION_* macros).
inline std::string_view version() noexcept { return sockserv_version(); }

/// A failed call: its code, and the detail sockserv_last_error gave on the
/// failing thread. what() reads "CALL: STATIC TEXT (DETAIL)".
class error : public std::runtime_error {
public:
    /// Reads the calling thread's detail: construct it right after the
    /// failed call, on the same thread.
    error(sockserv_result code, const char *call)
        : error(code, call, std::make_shared<const std::string>(last_error())) {}

    /// The code the call returned.
    sockserv_result code() const noexcept { return code_; }
    /// The detail alone ("connecting to tcp://127.0.0.1:9: Connection refused ...").
    const std::string &detail() const noexcept { return *detail_; }

private:
    error(sockserv_result code, const char *call, std::shared_ptr<const std::string> detail)
        : std::runtime_error(std::string(call) + ": " + sockserv_strerror(code) +
                             (detail->empty() ? std::string() : " (" + *detail + ")")),
          code_(code), detail_(std::move(detail)) {}

    sockserv_result code_;
    // Shared, so copying the exception cannot throw.
    std::shared_ptr<const std::string> detail_;
};

namespace detail {
inline void check(sockserv_result rc, const char *call) {
    if (rc != SOCKSERV_OK)
        throw error(rc, call);
}
} // namespace detail

/// A borrowed byte buffer: a pointer and a size (C++17 has no std::span).
/// It never owns the bytes: keep them alive while the view is used.
class bytes {
public:
    /// An empty view.
    constexpr bytes() noexcept = default;
    /// `size` bytes at `data`.
    ///@{
    constexpr bytes(const std::uint8_t *data, std::size_t size) noexcept
        : data_(data), size_(size) {}
    bytes(const char *data, std::size_t size) noexcept
        : data_(reinterpret_cast<const std::uint8_t *>(data)), size_(size) {}
    ///@}
    /// A NUL-terminated string, without its NUL.
    bytes(const char *c_string) noexcept
        : bytes(c_string, c_string ? std::strlen(c_string) : 0) {}
    /// Any contiguous container of 1-byte elements: std::string,
    /// std::string_view, std::vector<uint8_t>, std::array<char, N>...
    /// (not raw arrays: a string literal would bring its NUL along).
    template <class C,
              class E = std::remove_reference_t<decltype(*std::data(std::declval<const C &>()))>,
              class = std::enable_if_t<sizeof(E) == 1 && !std::is_array_v<C>>>
    bytes(const C &container) noexcept
        : data_(reinterpret_cast<const std::uint8_t *>(std::data(container))),
          size_(std::size(container)) {}

    /// The first byte (NULL for an empty default view).
    const std::uint8_t *data() const noexcept { return data_; }
    /// The number of bytes.
    std::size_t size() const noexcept { return size_; }
    /// Whether size() is 0.
    bool empty() const noexcept { return size_ == 0; }
    /// Iteration over the bytes.
    ///@{
    const std::uint8_t *begin() const noexcept { return data_; }
    const std::uint8_t *end() const noexcept { return data_ + size_; }
    ///@}
    /// The same bytes as characters (no copy).
    std::string_view as_string_view() const noexcept {
        return std::string_view(reinterpret_cast<const char *>(data_), size_);
    }
    /// A copy, as a string.
    std::string to_string() const { return std::string(as_string_view()); }
    /// A copy, as a vector.
    std::vector<std::uint8_t> to_vector() const {
        return std::vector<std::uint8_t>(begin(), end());
    }

private:
    const std::uint8_t *data_ = nullptr;
    std::size_t size_ = 0;
};

/// Settings for servers and clients (sockserv_config_*). Servers and
/// connections copy it, so it may go as soon as they are made. Setters
/// return *this for chaining and throw sockserv::error on a bad value.
class config {
public:
    /// A config with the defaults (see sockserv_config_new).
    config() {
        sockserv_config *raw = nullptr;
        detail::check(sockserv_config_new(&raw), "sockserv_config_new");
        handle_.reset(raw);
    }

    /// @name Settings
    /// Each calls the C function of the same name (sockserv_config_set_...,
    /// documented in sockserv.h), throws sockserv::error if it refuses the
    /// value, and returns *this.
    ///@{

    /// Calls the sockserv_config_ function of the same name; see sockserv.h.
    config &set_auth_key(bytes key) {
        return set(sockserv_config_set_auth_key(get(), key.data(), key.size()), "sockserv_config_set_auth_key");
    }
    config &add_auth_key(bytes key) {
        return set(sockserv_config_add_auth_key(get(), key.data(), key.size()), "sockserv_config_add_auth_key");
    }
    config &clear_auth_keys() {
        return set(sockserv_config_clear_auth_keys(get()), "sockserv_config_clear_auth_keys");
    }
    config &set_max_frame_size(std::uint64_t b) {
        return set(sockserv_config_set_max_frame_size(get(), b), "sockserv_config_set_max_frame_size");
    }
    config &set_handshake_timeout_ms(std::uint32_t ms) {
        return set(sockserv_config_set_handshake_timeout_ms(get(), ms), "sockserv_config_set_handshake_timeout_ms");
    }
    config &set_io_timeout_ms(std::uint32_t ms) {
        return set(sockserv_config_set_io_timeout_ms(get(), ms), "sockserv_config_set_io_timeout_ms");
    }
    config &set_connect_timeout_ms(std::uint32_t ms) {
        return set(sockserv_config_set_connect_timeout_ms(get(), ms), "sockserv_config_set_connect_timeout_ms");
    }
    config &set_max_connections(std::size_t n) {
        return set(sockserv_config_set_max_connections(get(), n), "sockserv_config_set_max_connections");
    }
    config &set_when_full(int when) {
        return set(sockserv_config_set_when_full(get(), when), "sockserv_config_set_when_full");
    }
    config &set_backlog(int n) {
        return set(sockserv_config_set_backlog(get(), n), "sockserv_config_set_backlog");
    }
    config &set_reuse_address(bool on) {
        return set(sockserv_config_set_reuse_address(get(), on), "sockserv_config_set_reuse_address");
    }
    config &set_reuse_port(bool on) {
        return set(sockserv_config_set_reuse_port(get(), on), "sockserv_config_set_reuse_port");
    }
    config &set_nodelay(bool on) {
        return set(sockserv_config_set_nodelay(get(), on), "sockserv_config_set_nodelay");
    }
    config &set_keepalive(bool on) {
        return set(sockserv_config_set_keepalive(get(), on), "sockserv_config_set_keepalive");
    }
    config &set_io_threads(std::size_t n) {
        return set(sockserv_config_set_io_threads(get(), n), "sockserv_config_set_io_threads");
    }
    config &set_max_queued_bytes(std::size_t b) {
        return set(sockserv_config_set_max_queued_bytes(get(), b), "sockserv_config_set_max_queued_bytes");
    }
    config &set_close_when_backed_up(bool on) {
        return set(sockserv_config_set_close_when_backed_up(get(), on), "sockserv_config_set_close_when_backed_up");
    }
    config &set_idle_timeout_ms(std::uint32_t ms) {
        return set(sockserv_config_set_idle_timeout_ms(get(), ms), "sockserv_config_set_idle_timeout_ms");
    }

    ///@}

    /// The C handle, for calls the wrapper does not cover; still owned here.
    sockserv_config *get() const noexcept { return handle_.get(); }

private:
    config &set(sockserv_result rc, const char *call) {
        detail::check(rc, call);
        return *this;
    }
    struct deleter {
        void operator()(sockserv_config *c) const noexcept { sockserv_config_free(c); }
    };
    std::unique_ptr<sockserv_config, deleter> handle_;
};

/// A connection you do not own: what a handler or event callback receives,
/// valid for as long as the C API says (during the handler call; from
/// on_open until on_close returns). A plain pointer: copy it freely.
class conn_ref {
public:
    /// No connection (operator bool is false).
    conn_ref() noexcept = default;
    /// Borrows a C handle (not freed here).
    explicit conn_ref(sockserv_conn *conn) noexcept : conn_(conn) {}

    /// Sends one frame (event mode: queues it, never blocks).
    ///@{
    void send(bytes data) const { detail::check(send(data, std::nothrow), "sockserv_conn_send"); }
    [[nodiscard]] sockserv_result send(bytes data, std::nothrow_t) const noexcept {
        return sockserv_conn_send(conn_, data.data(), data.size());
    }
    ///@}

    /// The next whole frame, borrowed from the connection: valid until the
    /// next receive or poll on it (copy it with to_string()/to_vector()).
    ///@{
    bytes recv() const {
        bytes frame;
        detail::check(recv(frame, std::nothrow), "sockserv_conn_recv");
        return frame;
    }
    [[nodiscard]] sockserv_result recv(bytes &frame, std::nothrow_t) const noexcept {
        const std::uint8_t *data = nullptr;
        std::size_t len = 0;
        sockserv_result rc = sockserv_conn_recv(conn_, &data, &len);
        if (rc == SOCKSERV_OK)
            frame = bytes(data, len);
        return rc;
    }
    ///@}
    /// The next frame, copied.
    std::string recv_string() const { return recv().to_string(); }

    /// Copies the next frame into buf (cap bytes) and returns its size. Too
    /// small: SOCKSERV_ERR_INSUFFICIENT_SIZE, `len` is the size needed and
    /// the frame stays queued.
    ///@{
    std::size_t recv_into(std::uint8_t *buf, std::size_t cap) const {
        std::size_t len = 0;
        detail::check(recv_into(buf, cap, len, std::nothrow), "sockserv_conn_recv_into");
        return len;
    }
    [[nodiscard]] sockserv_result recv_into(std::uint8_t *buf, std::size_t cap, std::size_t &len,
                                            std::nothrow_t) const noexcept {
        return sockserv_conn_recv_into(conn_, buf, cap, &len);
    }
    ///@}

    /// Waits up to timeout_ms (negative: for ever) for something to receive.
    ///@{
    bool poll(int timeout_ms) const {
        bool readable = false;
        detail::check(poll(timeout_ms, readable, std::nothrow), "sockserv_conn_poll");
        return readable;
    }
    [[nodiscard]] sockserv_result poll(int timeout_ms, bool &readable, std::nothrow_t) const noexcept {
        return sockserv_conn_poll(conn_, timeout_ms, &readable);
    }
    ///@}

    /// Closes it from any thread (event mode: after the queued frames).
    void close() const { detail::check(sockserv_conn_close(conn_), "sockserv_conn_close"); }

    /// The peer's address ("tcp://127.0.0.1:5000", "unix://PATH").
    std::string peer_addr() const { return address(sockserv_conn_peer_addr, "sockserv_conn_peer_addr"); }
    /// This end's address.
    std::string local_addr() const { return address(sockserv_conn_local_addr, "sockserv_conn_local_addr"); }
    /// The socket, still owned by the connection: never read, write or close it.
    int fd() const {
        int fd = -1;
        detail::check(sockserv_conn_fd(conn_, &fd), "sockserv_conn_fd");
        return fd;
    }
    /// The timeout of each later send and receive (0: none).
    ///@{
    void set_timeout_ms(std::uint32_t ms) const {
        detail::check(sockserv_conn_set_timeout_ms(conn_, ms), "sockserv_conn_set_timeout_ms");
    }
    std::uint32_t timeout_ms() const {
        std::uint32_t ms = 0;
        detail::check(sockserv_conn_get_timeout_ms(conn_, &ms), "sockserv_conn_get_timeout_ms");
        return ms;
    }
    ///@}
    /// TCP_NODELAY (TCP only).
    ///@{
    void set_nodelay(bool on) const {
        detail::check(sockserv_conn_set_nodelay(conn_, on), "sockserv_conn_set_nodelay");
    }
    bool nodelay() const {
        bool on = false;
        detail::check(sockserv_conn_get_nodelay(conn_, &on), "sockserv_conn_get_nodelay");
        return on;
    }
    ///@}
    /// TCP keepalive; zero timings keep the kernel's (sockserv_conn_set_keepalive).
    void set_keepalive(bool on, std::uint32_t idle_s = 0, std::uint32_t interval_s = 0,
                       std::uint32_t count = 0) const {
        detail::check(sockserv_conn_set_keepalive(conn_, on, idle_s, interval_s, count),
                      "sockserv_conn_set_keepalive");
    }
    /// A pointer of yours, kept with the connection (sockserv never uses it).
    ///@{
    void set_userdata(void *userdata) const {
        detail::check(sockserv_conn_set_userdata(conn_, userdata), "sockserv_conn_set_userdata");
    }
    void *userdata() const noexcept { return sockserv_conn_get_userdata(conn_); }
    ///@}

    /// The C handle, for calls the wrapper does not cover.
    sockserv_conn *get() const noexcept { return conn_; }
    /// Whether there is a connection.
    explicit operator bool() const noexcept { return conn_ != nullptr; }

protected:
    /// The C handle (owned by a connection, borrowed by a conn_ref).
    sockserv_conn *conn_ = nullptr;

private:
    using addr_fn = sockserv_result (*)(const sockserv_conn *, char *, std::size_t, std::size_t *);
    std::string address(addr_fn fn, const char *call) const {
        char buf[SOCKSERV_ADDRSTRLEN];
        std::size_t needed = 0;
        detail::check(fn(conn_, buf, sizeof buf, &needed), call);
        return std::string(buf);
    }
};

/// A client connection you own (sockserv_connect, sockserv_conn_from_fd),
/// freed by the destructor. Move-only; converts to conn_ref to lend it.
class connection : public conn_ref {
public:
    /// No connection.
    connection() noexcept = default;
    /// Connects to `addr` (and runs the handshake when `cfg` has a key);
    /// without a config, with the defaults.
    ///@{
    explicit connection(const std::string &addr) { connect_or_throw(addr, nullptr); }
    connection(const std::string &addr, const config &cfg) { connect_or_throw(addr, cfg.get()); }
    ///@}

    /// The constructor's nothrow twin: the code, and `out` on success.
    [[nodiscard]] static sockserv_result connect(const std::string &addr, const config &cfg,
                                                 connection &out, std::nothrow_t) noexcept {
        sockserv_conn *raw = nullptr;
        sockserv_result rc = sockserv_connect(addr.c_str(), cfg.get(), &raw);
        if (rc == SOCKSERV_OK)
            out = connection(raw);
        return rc;
    }

    /// Adopts a connected socket (SOCKSERV_ROLE_SERVER or _CLIENT); it owns
    /// the fd on success only.
    ///@{
    static connection from_fd(int fd, const config &cfg, int role) {
        connection out;
        detail::check(from_fd(fd, cfg, role, out, std::nothrow), "sockserv_conn_from_fd");
        return out;
    }
    [[nodiscard]] static sockserv_result from_fd(int fd, const config &cfg, int role,
                                                 connection &out, std::nothrow_t) noexcept {
        sockserv_conn *raw = nullptr;
        sockserv_result rc = sockserv_conn_from_fd(fd, cfg.get(), role, &raw);
        if (rc == SOCKSERV_OK)
            out = connection(raw);
        return rc;
    }
    ///@}

    connection(const connection &) = delete;
    connection &operator=(const connection &) = delete;
    /// Moves ownership; `other` is left empty.
    ///@{
    connection(connection &&other) noexcept : conn_ref(std::exchange(other.conn_, nullptr)) {}
    connection &operator=(connection &&other) noexcept {
        if (this != &other) {
            sockserv_conn_free(conn_);
            conn_ = std::exchange(other.conn_, nullptr);
        }
        return *this;
    }
    ///@}
    /// Closes and frees the connection.
    ~connection() { sockserv_conn_free(conn_); }

    /// Gives up ownership: free the handle with sockserv_conn_free.
    sockserv_conn *release() noexcept { return std::exchange(conn_, nullptr); }

private:
    explicit connection(sockserv_conn *raw) noexcept : conn_ref(raw) {}
    void connect_or_throw(const std::string &addr, const sockserv_config *cfg) {
        detail::check(sockserv_connect(addr.c_str(), cfg, &conn_), "sockserv_connect");
    }
};

/// sockserv_server_stat's counters, all at once.
struct server_stats {
    std::uint64_t accepted;           ///< SOCKSERV_STAT_ACCEPTED
    std::uint64_t active;             ///< SOCKSERV_STAT_ACTIVE
    std::uint64_t refused_by_verify;  ///< SOCKSERV_STAT_REFUSED_BY_VERIFY
    std::uint64_t refused_when_full;  ///< SOCKSERV_STAT_REFUSED_WHEN_FULL
    std::uint64_t handshake_failures; ///< SOCKSERV_STAT_HANDSHAKE_FAILURES
    std::uint64_t handled;            ///< SOCKSERV_STAT_HANDLED
};

namespace detail {

/// What a server's C callbacks reach through userdata. Owned by the server
/// and freed only after sockserv_server_free, when no callback can run.
struct callbacks {
    std::function<void(conn_ref)> handler;
    std::function<bool(std::string_view)> verify;
    std::function<void(conn_ref)> on_open;
    std::function<void(conn_ref, bytes)> on_frame;
    std::function<void(conn_ref, sockserv_result)> on_close;
    std::function<void(std::exception_ptr)> on_exception;

    /// Hands an exception caught at the boundary to on_exception, or prints
    /// it; nothing escapes from here.
    void report(std::exception_ptr e, const char *where) noexcept {
        try {
            if (on_exception) {
                on_exception(e);
                return;
            }
            std::rethrow_exception(e);
        } catch (const std::exception &ex) {
            std::fprintf(stderr, "sockserv: the %s threw: %s\n", where, ex.what());
        } catch (...) {
            std::fprintf(stderr, "sockserv: the %s threw an exception\n", where);
        }
    }
};

// The trampolines: C linkage, as the C function pointer types want. Each
// catches everything, so no exception crosses into C.
extern "C" {
inline void sockserv_cxx_handler(void *userdata, sockserv_conn *conn) {
    auto *cb = static_cast<callbacks *>(userdata);
    try {
        cb->handler(conn_ref(conn));
    } catch (...) {
        cb->report(std::current_exception(), "connection handler");
    }
}

inline bool sockserv_cxx_verify(void *userdata, const char *peer) {
    auto *cb = static_cast<callbacks *>(userdata);
    try {
        return cb->verify(peer);
    } catch (...) {
        cb->report(std::current_exception(), "verify callback");
        return false; // refuse the peer we could not judge
    }
}

inline void sockserv_cxx_open(void *userdata, sockserv_conn *conn) {
    auto *cb = static_cast<callbacks *>(userdata);
    try {
        cb->on_open(conn_ref(conn));
    } catch (...) {
        cb->report(std::current_exception(), "on_open callback");
        sockserv_conn_close(conn); // a connection its owner failed to set up
    }
}

inline void sockserv_cxx_frame(void *userdata, sockserv_conn *conn, const std::uint8_t *data,
                               std::size_t len) {
    auto *cb = static_cast<callbacks *>(userdata);
    try {
        cb->on_frame(conn_ref(conn), bytes(data, len));
    } catch (...) {
        cb->report(std::current_exception(), "on_frame callback");
        sockserv_conn_close(conn); // its state is unknown now
    }
}

inline void sockserv_cxx_close(void *userdata, sockserv_conn *conn, sockserv_result reason) {
    auto *cb = static_cast<callbacks *>(userdata);
    try {
        cb->on_close(conn_ref(conn), reason);
    } catch (...) {
        cb->report(std::current_exception(), "on_close callback");
    }
}
} // extern "C"

} // namespace detail

/// A listening server (sockserv_server_*), freed by the destructor, which
/// stops it, closes its connections and joins its threads. Set the
/// callbacks before start() or serve(). Move-only.
class server {
public:
    /// No server.
    server() noexcept = default;
    /// Binds and listens (port 0 picks a free port: see local_addr());
    /// without a config, with the defaults.
    ///@{
    explicit server(const std::string &addr) { bind_or_throw(addr, nullptr); }
    server(const std::string &addr, const config &cfg) { bind_or_throw(addr, cfg.get()); }
    ///@}

    /// The constructor's nothrow twin: the code, and `out` on success.
    [[nodiscard]] static sockserv_result bind(const std::string &addr, const config &cfg, server &out,
                                              std::nothrow_t) noexcept {
        sockserv_server *raw = nullptr;
        sockserv_result rc = sockserv_server_new(addr.c_str(), cfg.get(), &raw);
        if (rc == SOCKSERV_OK) {
            server made;
            made.srv_.reset(raw);
            out = std::move(made);
        }
        return rc;
    }

    /// Threaded mode: `handler(conn_ref)` runs on a thread of its own for
    /// each authenticated connection, concurrently with the others; the
    /// connection closes when it returns.
    template <class F> server &on_connection(F handler) {
        // Registered first: the C call refuses once the server runs, and
        // only then may the callback table change (no trampoline reads it).
        check(sockserv_server_set_handler(get(), detail::sockserv_cxx_handler, &callbacks()),
              "sockserv_server_set_handler");
        cb_->handler = std::move(handler);
        return *this;
    }

    /// `verify(std::string_view peer_addr) -> bool` runs on the accept
    /// thread before the handshake; false (or an exception) refuses the peer.
    template <class F> server &on_verify(F verify) {
        check(sockserv_server_set_verify(get(), detail::sockserv_cxx_verify, &callbacks()),
              "sockserv_server_set_verify");
        cb_->verify = std::move(verify);
        return *this;
    }

    /// Event mode: `on_open(conn_ref)`, `on_frame(conn_ref, bytes)` and
    /// `on_close(conn_ref, sockserv_result reason)` run on the connection's
    /// I/O thread and must not block; pass nullptr for any you do not need.
    /// An exception from on_open or on_frame closes that connection.
    server &on_events(std::function<void(conn_ref)> on_open,
                      std::function<void(conn_ref, bytes)> on_frame,
                      std::function<void(conn_ref, sockserv_result)> on_close) {
        // NULL for a callback not given: sockserv then skips it.
        check(sockserv_server_set_event_handlers(
                  get(), on_open ? detail::sockserv_cxx_open : nullptr,
                  on_frame ? detail::sockserv_cxx_frame : nullptr,
                  on_close ? detail::sockserv_cxx_close : nullptr, &callbacks()),
              "sockserv_server_set_event_handlers");
        cb_->on_open = std::move(on_open);
        cb_->on_frame = std::move(on_frame);
        cb_->on_close = std::move(on_close);
        return *this;
    }

    /// Receives every exception a callback threw (on the thread that ran
    /// it); by default they are printed to stderr. Set it before starting.
    template <class F> server &on_exception(F handler) {
        callbacks().on_exception = std::move(handler);
        return *this;
    }

    /// Serves on a background thread and returns at once.
    ///@{
    void start() { check(start(std::nothrow), "sockserv_server_start"); }
    [[nodiscard]] sockserv_result start(std::nothrow_t) noexcept {
        return sockserv_server_start(get());
    }
    ///@}
    /// Serves on this thread until shutdown().
    ///@{
    void serve() { check(serve(std::nothrow), "sockserv_server_serve"); }
    [[nodiscard]] sockserv_result serve(std::nothrow_t) noexcept {
        return sockserv_server_serve(get());
    }
    ///@}
    /// Stops accepting, from any thread (a handler too); returns at once.
    void shutdown() noexcept { sockserv_server_shutdown(get()); }

    /// The bound address, e.g. "tcp://127.0.0.1:40123".
    std::string local_addr() const {
        char buf[SOCKSERV_ADDRSTRLEN];
        std::size_t needed = 0;
        check(sockserv_server_local_addr(get(), buf, sizeof buf, &needed),
              "sockserv_server_local_addr");
        return std::string(buf);
    }

    /// Every counter (sockserv_server_stat).
    server_stats stats() const {
        server_stats s{};
        const std::pair<int, std::uint64_t *> all[] = {
            {SOCKSERV_STAT_ACCEPTED, &s.accepted},
            {SOCKSERV_STAT_ACTIVE, &s.active},
            {SOCKSERV_STAT_REFUSED_BY_VERIFY, &s.refused_by_verify},
            {SOCKSERV_STAT_REFUSED_WHEN_FULL, &s.refused_when_full},
            {SOCKSERV_STAT_HANDSHAKE_FAILURES, &s.handshake_failures},
            {SOCKSERV_STAT_HANDLED, &s.handled},
        };
        for (const auto &[stat, value] : all)
            check(sockserv_server_stat(get(), stat, value), "sockserv_server_stat");
        return s;
    }

    /// Moves ownership; `other` is left empty.
    ///@{
    server(server &&other) noexcept = default;
    server &operator=(server &&other) noexcept {
        // Free our server before our callbacks: a running server may call them.
        srv_ = std::move(other.srv_);
        cb_ = std::move(other.cb_);
        return *this;
    }
    ///@}
    server(const server &) = delete;
    server &operator=(const server &) = delete;
    /// Stops and frees the server (sockserv_server_free), then the callbacks.
    ~server() { srv_.reset(); } // before cb_, for the same reason

    /// The C handle, for calls the wrapper does not cover; still owned here.
    sockserv_server *get() const noexcept { return srv_.get(); }
    /// Whether there is a server.
    explicit operator bool() const noexcept { return srv_ != nullptr; }

private:
    static void check(sockserv_result rc, const char *call) { detail::check(rc, call); }
    void bind_or_throw(const std::string &addr, const sockserv_config *cfg) {
        sockserv_server *raw = nullptr;
        check(sockserv_server_new(addr.c_str(), cfg, &raw), "sockserv_server_new");
        srv_.reset(raw);
    }
    detail::callbacks &callbacks() {
        if (!cb_)
            cb_ = std::make_unique<detail::callbacks>();
        return *cb_;
    }
    struct deleter {
        void operator()(sockserv_server *s) const noexcept { sockserv_server_free(s); }
    };
    // Declared first, destroyed last: after the server that calls into it.
    std::unique_ptr<detail::callbacks> cb_;
    std::unique_ptr<sockserv_server, deleter> srv_;
};

/// HMAC-SHA256(key, msg).
inline std::array<std::uint8_t, 32> hmac_sha256(bytes key, bytes msg) {
    std::array<std::uint8_t, 32> mac{};
    detail::check(sockserv_hmac_sha256(key.data(), key.size(), msg.data(), msg.size(), mac.data()),
                  "sockserv_hmac_sha256");
    return mac;
}

/// Whether `mac` is HMAC-SHA256(key, msg), compared in constant time.
inline bool hmac_sha256_verify(bytes key, bytes msg, bytes mac) noexcept {
    return sockserv_hmac_sha256_verify(key.data(), key.size(), msg.data(), msg.size(), mac.data(),
                                       mac.size()) == SOCKSERV_OK;
}

} // namespace sockserv

#endif /* SOCKSERV_HPP */
