/*
 * sockserv.hpp: a header-only C++17 wrapper over sockserv.h.
 *
 * - RAII: sockserv::config, sockserv::server, sockserv::connection,
 *   sockserv::dgram and sockserv::dgram_server own their C handle and free
 *   it in their destructor; they move, never copy. sockserv::conn_ref and
 *   sockserv::dgram_ref are borrowed (what handlers receive).
 *   sockserv::conn_handle is a counted reference to a connection
 *   (sockserv_conn_retain / _release): copy it to a worker thread, and it
 *   stays safe to call after the connection closed (SOCKSERV_ERR_CLOSED).
 * - Buffers: sockserv::bytes, a pointer and a size, made from a string,
 *   string_view, vector, array or (pointer, size).
 * - Callbacks are any callables (lambdas), reached through C trampolines
 *   (userdata points at the server's callback table). An exception thrown
 *   by one is caught at the boundary, never thrown through C, and given to
 *   the server's exception handler (default: printed to stderr).
 * - Errors: a failed call throws sockserv::error, which carries the code and
 *   the detail from sockserv_last_error. Calls that can fail at run time
 *   (bind, serve, connect, open, send, receive, poll, flush) have a noexcept twin that
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
#include <atomic>
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

/// Forgets the calling thread's last failure detail (sockserv_clear_error).
inline void clear_error() noexcept { sockserv_clear_error(); }

/// The library's version, "MAJOR.MINOR.PATCH" (the header's is in the
/// SOCKSERV_VERSION_* macros).
inline std::string_view version() noexcept { return sockserv_version(); }

/// A refusal log (see set_refusal_log): the peer's address, why (the code)
/// and the detail text, each valid during the call only.
using refusal_log = void (*)(std::string_view peer, sockserv_result code,
                             std::string_view detail);

namespace detail {
// The log the trampoline calls: a plain function never dies, so a call
// running while the log is replaced is safe (no userdata to free).
inline std::atomic<refusal_log> current_refusal_log{nullptr};

extern "C" {
inline void sockserv_cxx_refusal(void *, const char *peer, sockserv_result code,
                                 const char *detail) {
    refusal_log log = current_refusal_log.load();
    if (!log)
        return;
    try {
        log(peer, code, detail);
    } catch (const std::exception &ex) {
        std::fprintf(stderr, "sockserv: the refusal log threw: %s\n", ex.what());
    } catch (...) {
        std::fprintf(stderr, "sockserv: the refusal log threw an exception\n");
    }
}
} // extern "C"
} // namespace detail

/// Sets (nullptr removes) the process-wide refusal log
/// (sockserv_set_refusal_log): called for each peer any server turns away
/// (a failed PROXY header or handshake, the verify callback, the connection
/// cap) and each sealed datagram a socket drops, on the library's thread
/// that refused, concurrently; keep it quick. An exception it throws is
/// caught at the boundary and printed.
inline void set_refusal_log(refusal_log log) noexcept {
    detail::current_refusal_log.store(log);
    // Always OK: nothing here can fail.
    (void)sockserv_set_refusal_log(log ? detail::sockserv_cxx_refusal : nullptr, nullptr);
}

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
    config &set_max_pending_handshakes(std::size_t n) {
        return set(sockserv_config_set_max_pending_handshakes(get(), n),
                   "sockserv_config_set_max_pending_handshakes");
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
    config &set_v6_only(bool on) {
        return set(sockserv_config_set_v6_only(get(), on), "sockserv_config_set_v6_only");
    }
    config &set_coalesce_sends(bool on) {
        return set(sockserv_config_set_coalesce_sends(get(), on), "sockserv_config_set_coalesce_sends");
    }
    /// SOCKSERV_PROXY_OFF, _OPTIONAL or _REQUIRED.
    config &set_proxy_protocol(int mode) {
        return set(sockserv_config_set_proxy_protocol(get(), mode), "sockserv_config_set_proxy_protocol");
    }
    // TLS (minimal: the C functions, one each).
    config &set_tls_cert(std::string_view chain_pem, std::string_view key_pem) {
        return set(sockserv_config_set_tls_cert(get(), chain_pem.data(), chain_pem.size(), key_pem.data(),
                                                key_pem.size()),
                   "sockserv_config_set_tls_cert");
    }
    config &set_tls_cert_files(const char *chain_path, const char *key_path) {
        return set(sockserv_config_set_tls_cert_files(get(), chain_path, key_path),
                   "sockserv_config_set_tls_cert_files");
    }
    config &set_tls_ca(std::string_view ca_pem) {
        return set(sockserv_config_set_tls_ca(get(), ca_pem.data(), ca_pem.size()), "sockserv_config_set_tls_ca");
    }
    config &set_tls_ca_file(const char *path) {
        return set(sockserv_config_set_tls_ca_file(get(), path), "sockserv_config_set_tls_ca_file");
    }
    config &set_tls_server_name(const char *name) {
        return set(sockserv_config_set_tls_server_name(get(), name), "sockserv_config_set_tls_server_name");
    }
    /// SOCKSERV_TLS_CLIENT_AUTH_NONE, _OPTIONAL or _REQUIRED.
    config &set_tls_client_auth(int mode) {
        return set(sockserv_config_set_tls_client_auth(get(), mode), "sockserv_config_set_tls_client_auth");
    }
    config &add_tls_alpn(const char *protocol) {
        return set(sockserv_config_add_tls_alpn(get(), protocol), "sockserv_config_add_tls_alpn");
    }
    /// SOCKSERV_TLS_VERSION_1_2 or _1_3.
    config &set_tls_min_version(int version) {
        return set(sockserv_config_set_tls_min_version(get(), version), "sockserv_config_set_tls_min_version");
    }
    config &set_tls(bool on) { return set(sockserv_config_set_tls(get(), on), "sockserv_config_set_tls"); }
    config &set_max_datagram_size(std::size_t b) {
        return set(sockserv_config_set_max_datagram_size(get(), b), "sockserv_config_set_max_datagram_size");
    }
    config &set_datagram_window_ms(std::uint32_t ms) {
        return set(sockserv_config_set_datagram_window_ms(get(), ms), "sockserv_config_set_datagram_window_ms");
    }
    config &set_datagram_replay_capacity(std::size_t n) {
        return set(sockserv_config_set_datagram_replay_capacity(get(), n),
                   "sockserv_config_set_datagram_replay_capacity");
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
/// on_open until on_close returns). A plain pointer: copy it freely. To
/// keep it longer (a worker thread replying later), make a conn_handle
/// from it while it is valid.
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
    /// TLS (minimal): the SHA-256 of the peer's certificate.
    std::array<std::uint8_t, 32> peer_cert_sha256() const {
        std::array<std::uint8_t, 32> sha{};
        detail::check(sockserv_conn_peer_cert_sha256(conn_, sha.data()), "sockserv_conn_peer_cert_sha256");
        return sha;
    }
    /// TLS: the subject of the peer's certificate ("CN=client,O=Example").
    std::string peer_cert_subject() const {
        std::size_t needed = 0;
        sockserv_result rc = sockserv_conn_peer_cert_subject(conn_, nullptr, 0, &needed);
        if (rc != SOCKSERV_ERR_INSUFFICIENT_SIZE)
            detail::check(rc, "sockserv_conn_peer_cert_subject");
        std::string subject(needed, '\0');
        detail::check(sockserv_conn_peer_cert_subject(conn_, &subject[0], needed, &needed),
                      "sockserv_conn_peer_cert_subject");
        subject.resize(needed - 1);
        return subject;
    }
    /// TLS: the version negotiated (SOCKSERV_TLS_VERSION_1_3: 0x0304).
    int tls_version() const {
        int version = 0;
        char alpn[256];
        std::size_t needed = 0;
        detail::check(sockserv_conn_tls_info(conn_, &version, alpn, sizeof alpn, &needed), "sockserv_conn_tls_info");
        return version;
    }
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
    /// A connection option (SOCKSERV_OPT_NODELAY, _KEEPALIVE, _RCVBUF,
    /// _NONBLOCKING...; sockserv_conn_set_option / _get_option).
    ///@{
    void set_option(int option, std::int64_t value) const {
        detail::check(sockserv_conn_set_option(conn_, option, value), "sockserv_conn_set_option");
    }
    std::int64_t option(int option) const {
        std::int64_t value = 0;
        detail::check(sockserv_conn_get_option(conn_, option, &value), "sockserv_conn_get_option");
        return value;
    }
    ///@}
    /// Non-blocking mode (SOCKSERV_OPT_NONBLOCKING): receives and sends
    /// that would wait give SOCKSERV_ERR_WOULD_BLOCK (use the nothrow twins);
    /// a send the kernel took part of is finished by the next send or flush().
    ///@{
    void set_nonblocking(bool on) const { set_option(SOCKSERV_OPT_NONBLOCKING, on ? 1 : 0); }
    bool nonblocking() const { return option(SOCKSERV_OPT_NONBLOCKING) != 0; }
    ///@}
    /// Writes what an earlier send left (non-blocking mode: the rest of a
    /// frame; with coalesced sends: the held replies). The nothrow twin
    /// gives SOCKSERV_ERR_WOULD_BLOCK while some is left in non-blocking mode.
    ///@{
    void flush() const { detail::check(flush(std::nothrow), "sockserv_conn_flush"); }
    [[nodiscard]] sockserv_result flush(std::nothrow_t) const noexcept {
        return sockserv_conn_flush(conn_);
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

/// A counted reference to a connection (sockserv_conn_retain, released by
/// the destructor): the handle stays valid memory for as long as a
/// conn_handle holds it, on any thread, after on_close ran or the handler
/// returned too. Calls on a connection that has ended throw (or, nothrow,
/// return) SOCKSERV_ERR_CLOSED; nothing is ever used after it was freed.
/// Make one from the conn_ref a callback got, during that callback (or
/// from a connection you own); copying retains again, moving does not.
class conn_handle : public conn_ref {
public:
    /// No connection.
    conn_handle() noexcept = default;
    /// Takes a reference to `conn` (which must be valid now).
    explicit conn_handle(conn_ref conn) : conn_ref(conn.get()) {
        if (conn_)
            detail::check(sockserv_conn_retain(conn_), "sockserv_conn_retain");
    }
    /// Another reference to the same connection.
    conn_handle(const conn_handle &other) : conn_handle(static_cast<const conn_ref &>(other)) {}
    /// Moves the reference; `other` is left empty.
    conn_handle(conn_handle &&other) noexcept : conn_ref(std::exchange(other.conn_, nullptr)) {}
    /// Copy or move assignment (by value, then swapped).
    conn_handle &operator=(conn_handle other) noexcept {
        std::swap(conn_, other.conn_);
        return *this;
    }
    /// Drops the reference (sockserv_conn_release).
    ~conn_handle() { sockserv_conn_release(conn_); }
    /// Drops the reference now; the handle is left empty.
    void reset() noexcept { sockserv_conn_release(std::exchange(conn_, nullptr)); }
};

/// sockserv_server_stat's counters, all at once.
struct server_stats {
    std::uint64_t accepted;           ///< SOCKSERV_STAT_ACCEPTED
    std::uint64_t active;             ///< SOCKSERV_STAT_ACTIVE
    std::uint64_t refused_by_verify;  ///< SOCKSERV_STAT_REFUSED_BY_VERIFY
    std::uint64_t refused_when_full;  ///< SOCKSERV_STAT_REFUSED_WHEN_FULL
    std::uint64_t handshake_failures; ///< SOCKSERV_STAT_HANDSHAKE_FAILURES
    std::uint64_t handled;            ///< SOCKSERV_STAT_HANDLED
    std::uint64_t proxy_failures;     ///< SOCKSERV_STAT_PROXY_FAILURES
};

namespace detail {

/// Where a callback's exception goes (shared by both kinds of server).
struct reporter {
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

/// What a server's C callbacks reach through userdata. Owned by the server
/// and freed only after sockserv_server_free, when no callback can run.
struct callbacks : reporter {
    std::function<void(conn_ref)> handler;
    std::function<bool(std::string_view)> verify;
    std::function<void(conn_ref)> on_open;
    std::function<void(conn_ref, bytes)> on_frame;
    std::function<void(conn_ref, sockserv_result)> on_close;
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
            {SOCKSERV_STAT_PROXY_FAILURES, &s.proxy_failures},
        };
        for (const auto &[stat, value] : all)
            check(sockserv_server_stat(get(), stat, value), "sockserv_server_stat");
        return s;
    }

    /// One counter (SOCKSERV_STAT_*).
    std::uint64_t stat(int which) const {
        std::uint64_t value = 0;
        check(sockserv_server_stat(get(), which, &value), "sockserv_server_stat");
        return value;
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

/// sockserv_dgram_stat's counters, all at once.
struct dgram_stats {
    std::uint64_t sent;        ///< SOCKSERV_DGRAM_STAT_SENT
    std::uint64_t received;    ///< SOCKSERV_DGRAM_STAT_RECEIVED
    std::uint64_t too_large;   ///< SOCKSERV_DGRAM_STAT_TOO_LARGE
    std::uint64_t too_short;   ///< SOCKSERV_DGRAM_STAT_TOO_SHORT
    std::uint64_t bad_version; ///< SOCKSERV_DGRAM_STAT_BAD_VERSION
    std::uint64_t bad_tag;     ///< SOCKSERV_DGRAM_STAT_BAD_TAG
    std::uint64_t too_old;     ///< SOCKSERV_DGRAM_STAT_TOO_OLD
    std::uint64_t too_new;     ///< SOCKSERV_DGRAM_STAT_TOO_NEW
    std::uint64_t replayed;    ///< SOCKSERV_DGRAM_STAT_REPLAYED
};

/// A datagram received with its sender (dgram_ref::recv_from).
struct datagram {
    std::vector<std::uint8_t> data; ///< The payload (checked and unsealed with a key).
    std::string from;               ///< The sender ("udp://127.0.0.1:40000", "unixgram://@name").
    /// The payload as characters (no copy).
    std::string_view as_string_view() const noexcept {
        return std::string_view(reinterpret_cast<const char *>(data.data()), data.size());
    }
};

/// A datagram socket you do not own: what a datagram server's handler
/// receives and what dgram_server::socket() lends (valid until the server
/// is freed). A plain pointer: copy it freely. With a key in the config,
/// every datagram is sealed and checked (docs/DATAGRAM.md).
class dgram_ref {
public:
    /// No socket (operator bool is false).
    dgram_ref() noexcept = default;
    /// Borrows a C handle (not freed here).
    explicit dgram_ref(sockserv_dgram *sock) noexcept : sock_(sock) {}

    /// Sends one datagram to `to` (an address string, e.g. a sender's).
    ///@{
    void send_to(const std::string &to, bytes data) const {
        detail::check(send_to(to, data, std::nothrow), "sockserv_dgram_send_to");
    }
    [[nodiscard]] sockserv_result send_to(const std::string &to, bytes data, std::nothrow_t) const noexcept {
        return sockserv_dgram_send_to(sock_, to.c_str(), data.data(), data.size());
    }
    ///@}
    /// Sends one datagram to the connected peer (dgram::connect).
    ///@{
    void send(bytes data) const { detail::check(send(data, std::nothrow), "sockserv_dgram_send"); }
    [[nodiscard]] sockserv_result send(bytes data, std::nothrow_t) const noexcept {
        return sockserv_dgram_send(sock_, data.data(), data.size());
    }
    ///@}

    /// Copies the next datagram's payload into buf (cap bytes), its sender
    /// into `from`, and returns its size. Too small: the nothrow twin gives
    /// SOCKSERV_ERR_INSUFFICIENT_SIZE with the size needed in `len`, and the
    /// datagram stays queued.
    ///@{
    std::size_t recv_from(std::uint8_t *buf, std::size_t cap, std::string &from) const {
        std::size_t len = 0;
        detail::check(recv_from(buf, cap, len, from, std::nothrow), "sockserv_dgram_recv_from");
        return len;
    }
    [[nodiscard]] sockserv_result recv_from(std::uint8_t *buf, std::size_t cap, std::size_t &len,
                                            std::string &from, std::nothrow_t) const noexcept {
        char addr[SOCKSERV_ADDRSTRLEN];
        std::size_t got = 0, needed = 0;
        sockserv_result rc = sockserv_dgram_recv_from(sock_, buf, cap, &got, addr, sizeof addr, &needed);
        if (rc == SOCKSERV_OK || rc == SOCKSERV_ERR_INSUFFICIENT_SIZE)
            len = got;
        if (rc == SOCKSERV_OK) {
            try {
                from.assign(addr);
            } catch (...) {
                return SOCKSERV_ERR_IO; // no memory for the address
            }
        }
        return rc;
    }
    ///@}
    /// The next datagram and its sender, in a buffer of the size it needs.
    datagram recv_from() const {
        datagram d;
        d.data.resize(SOCKSERV_DEFAULT_DATAGRAM_SIZE);
        std::size_t len = 0;
        sockserv_result rc = recv_from(d.data.data(), d.data.size(), len, d.from, std::nothrow);
        if (rc == SOCKSERV_ERR_INSUFFICIENT_SIZE) { // still queued: again with room
            d.data.resize(len);
            rc = recv_from(d.data.data(), d.data.size(), len, d.from, std::nothrow);
        }
        detail::check(rc, "sockserv_dgram_recv_from");
        d.data.resize(len);
        return d;
    }

    /// Copies the next datagram's payload into buf (cap bytes) and returns
    /// its size (for connected sockets; too small as recv_from).
    ///@{
    std::size_t recv_into(std::uint8_t *buf, std::size_t cap) const {
        std::size_t len = 0;
        detail::check(recv_into(buf, cap, len, std::nothrow), "sockserv_dgram_recv");
        return len;
    }
    [[nodiscard]] sockserv_result recv_into(std::uint8_t *buf, std::size_t cap, std::size_t &len,
                                            std::nothrow_t) const noexcept {
        return sockserv_dgram_recv(sock_, buf, cap, &len);
    }
    ///@}
    /// The next datagram's payload, copied.
    std::string recv_string() const {
        std::string out(SOCKSERV_DEFAULT_DATAGRAM_SIZE, '\0');
        std::size_t len = 0;
        auto buf = [&] { return reinterpret_cast<std::uint8_t *>(out.data()); };
        sockserv_result rc = recv_into(buf(), out.size(), len, std::nothrow);
        if (rc == SOCKSERV_ERR_INSUFFICIENT_SIZE) {
            out.resize(len);
            rc = recv_into(buf(), out.size(), len, std::nothrow);
        }
        detail::check(rc, "sockserv_dgram_recv");
        out.resize(len);
        return out;
    }

    /// The bound address ("udp://127.0.0.1:40000", "unixgram://@00a1f").
    std::string local_addr() const {
        char buf[SOCKSERV_ADDRSTRLEN];
        std::size_t needed = 0;
        detail::check(sockserv_dgram_local_addr(sock_, buf, sizeof buf, &needed), "sockserv_dgram_local_addr");
        return std::string(buf);
    }
    /// The socket, still owned here: never read from it (with a key the
    /// datagrams would go unchecked) or close it.
    int fd() const {
        int fd = -1;
        detail::check(sockserv_dgram_fd(sock_, &fd), "sockserv_dgram_fd");
        return fd;
    }
    /// The timeout of each later send and receive (0: none).
    ///@{
    void set_timeout_ms(std::uint32_t ms) const {
        detail::check(sockserv_dgram_set_timeout_ms(sock_, ms), "sockserv_dgram_set_timeout_ms");
    }
    std::uint32_t timeout_ms() const {
        std::uint32_t ms = 0;
        detail::check(sockserv_dgram_get_timeout_ms(sock_, &ms), "sockserv_dgram_get_timeout_ms");
        return ms;
    }
    ///@}
    /// One counter (SOCKSERV_DGRAM_STAT_*).
    std::uint64_t stat(int which) const {
        std::uint64_t value = 0;
        detail::check(sockserv_dgram_stat(sock_, which, &value), "sockserv_dgram_stat");
        return value;
    }
    /// Every counter.
    dgram_stats stats() const {
        return dgram_stats{stat(SOCKSERV_DGRAM_STAT_SENT),        stat(SOCKSERV_DGRAM_STAT_RECEIVED),
                           stat(SOCKSERV_DGRAM_STAT_TOO_LARGE),   stat(SOCKSERV_DGRAM_STAT_TOO_SHORT),
                           stat(SOCKSERV_DGRAM_STAT_BAD_VERSION), stat(SOCKSERV_DGRAM_STAT_BAD_TAG),
                           stat(SOCKSERV_DGRAM_STAT_TOO_OLD),     stat(SOCKSERV_DGRAM_STAT_TOO_NEW),
                           stat(SOCKSERV_DGRAM_STAT_REPLAYED)};
    }

    /// The C handle, for calls the wrapper does not cover.
    sockserv_dgram *get() const noexcept { return sock_; }
    /// Whether there is a socket.
    explicit operator bool() const noexcept { return sock_ != nullptr; }

protected:
    /// The C handle (owned by a dgram, borrowed by a dgram_ref).
    sockserv_dgram *sock_ = nullptr;
};

/// A datagram socket you own (sockserv_dgram_open, _connect), freed by the
/// destructor. Move-only; converts to dgram_ref to lend it.
class dgram : public dgram_ref {
public:
    /// No socket.
    dgram() noexcept = default;

    /// Opens a socket bound to `local_addr` ("udp://127.0.0.1:0",
    /// "unixgram:///path", "unixgram://@name"), or unbound with nullptr
    /// (the first send_to binds it in the destination's family).
    ///@{
    static dgram open(const char *local_addr, const config &cfg) {
        dgram out;
        detail::check(open(local_addr, cfg, out, std::nothrow), "sockserv_dgram_open");
        return out;
    }
    static dgram open(const char *local_addr = nullptr) {
        sockserv_dgram *raw = nullptr;
        detail::check(sockserv_dgram_open(local_addr, nullptr, &raw), "sockserv_dgram_open");
        return dgram(raw);
    }
    [[nodiscard]] static sockserv_result open(const char *local_addr, const config &cfg, dgram &out,
                                              std::nothrow_t) noexcept {
        sockserv_dgram *raw = nullptr;
        sockserv_result rc = sockserv_dgram_open(local_addr, cfg.get(), &raw);
        if (rc == SOCKSERV_OK)
            out = dgram(raw);
        return rc;
    }
    ///@}
    /// Opens a socket connected to `addr`: send() goes there and only its
    /// datagrams are received.
    ///@{
    static dgram connect(const std::string &addr, const config &cfg) {
        dgram out;
        detail::check(connect(addr, cfg, out, std::nothrow), "sockserv_dgram_connect");
        return out;
    }
    [[nodiscard]] static sockserv_result connect(const std::string &addr, const config &cfg, dgram &out,
                                                 std::nothrow_t) noexcept {
        sockserv_dgram *raw = nullptr;
        sockserv_result rc = sockserv_dgram_connect(addr.c_str(), cfg.get(), &raw);
        if (rc == SOCKSERV_OK)
            out = dgram(raw);
        return rc;
    }
    ///@}

    dgram(const dgram &) = delete;
    dgram &operator=(const dgram &) = delete;
    /// Moves ownership; `other` is left empty.
    ///@{
    dgram(dgram &&other) noexcept : dgram_ref(std::exchange(other.sock_, nullptr)) {}
    dgram &operator=(dgram &&other) noexcept {
        if (this != &other) {
            sockserv_dgram_free(sock_);
            sock_ = std::exchange(other.sock_, nullptr);
        }
        return *this;
    }
    ///@}
    /// Closes and frees the socket (removing a Unix socket file it bound).
    ~dgram() { sockserv_dgram_free(sock_); }

    /// Gives up ownership: free the handle with sockserv_dgram_free.
    sockserv_dgram *release() noexcept { return std::exchange(sock_, nullptr); }

private:
    explicit dgram(sockserv_dgram *raw) noexcept : dgram_ref(raw) {}
};

namespace detail {
/// What a datagram server's C handler reaches through userdata.
struct dgram_callbacks : reporter {
    std::function<void(dgram_ref, bytes, std::string_view)> handler;
};

extern "C" {
inline void sockserv_cxx_dgram_handler(void *userdata, sockserv_dgram *sock, const std::uint8_t *data,
                                       std::size_t len, const char *from) {
    auto *cb = static_cast<dgram_callbacks *>(userdata);
    try {
        cb->handler(dgram_ref(sock), bytes(data, len), from);
    } catch (...) {
        cb->report(std::current_exception(), "datagram handler");
    }
}
} // extern "C"
} // namespace detail

/// A datagram server (sockserv_dgram_server_*): one thread receives on a
/// bound socket and runs the handler for each datagram. The destructor
/// stops it and joins its thread. Set the handler before start() or
/// serve(). Move-only.
class dgram_server {
public:
    /// No server.
    dgram_server() noexcept = default;
    /// Binds `addr` ("udp://127.0.0.1:0", "unixgram:///path"); without a
    /// config, with the defaults.
    ///@{
    explicit dgram_server(const std::string &addr) { bind_or_throw(addr, nullptr); }
    dgram_server(const std::string &addr, const config &cfg) { bind_or_throw(addr, cfg.get()); }
    ///@}
    /// The constructor's nothrow twin: the code, and `out` on success.
    [[nodiscard]] static sockserv_result bind(const std::string &addr, const config &cfg, dgram_server &out,
                                              std::nothrow_t) noexcept {
        sockserv_dgram_server *raw = nullptr;
        sockserv_result rc = sockserv_dgram_server_new(addr.c_str(), cfg.get(), &raw);
        if (rc == SOCKSERV_OK) {
            dgram_server made;
            made.srv_.reset(raw);
            out = std::move(made);
        }
        return rc;
    }

    /// `handler(dgram_ref sock, bytes data, std::string_view from)` runs on
    /// the server's thread for each datagram, one at a time; `data` and
    /// `from` are valid during the call only. Reply with sock.send_to(from, ...).
    template <class F> dgram_server &on_datagram(F handler) {
        detail::check(sockserv_dgram_server_set_handler(get(), detail::sockserv_cxx_dgram_handler, &callbacks()),
                      "sockserv_dgram_server_set_handler");
        cb_->handler = std::move(handler);
        return *this;
    }
    /// Receives every exception the handler threw (default: printed to stderr).
    template <class F> dgram_server &on_exception(F handler) {
        callbacks().on_exception = std::move(handler);
        return *this;
    }

    /// Serves on a background thread and returns at once.
    ///@{
    void start() { detail::check(start(std::nothrow), "sockserv_dgram_server_start"); }
    [[nodiscard]] sockserv_result start(std::nothrow_t) noexcept { return sockserv_dgram_server_start(get()); }
    ///@}
    /// Serves on this thread until shutdown().
    ///@{
    void serve() { detail::check(serve(std::nothrow), "sockserv_dgram_server_serve"); }
    [[nodiscard]] sockserv_result serve(std::nothrow_t) noexcept { return sockserv_dgram_server_serve(get()); }
    ///@}
    /// Stops serving, from any thread (the handler too); returns at once.
    void shutdown() noexcept { sockserv_dgram_server_shutdown(get()); }

    /// The bound address, e.g. "udp://127.0.0.1:40123".
    std::string local_addr() const {
        char buf[SOCKSERV_ADDRSTRLEN];
        std::size_t needed = 0;
        detail::check(sockserv_dgram_server_local_addr(get(), buf, sizeof buf, &needed),
                      "sockserv_dgram_server_local_addr");
        return std::string(buf);
    }
    /// The server's socket, lent until the server is freed: to send from
    /// other threads, and for its counters.
    dgram_ref socket() const {
        sockserv_dgram *sock = nullptr;
        detail::check(sockserv_dgram_server_socket(get(), &sock), "sockserv_dgram_server_socket");
        return dgram_ref(sock);
    }
    /// Every counter of its socket.
    dgram_stats stats() const { return socket().stats(); }

    /// Moves ownership; `other` is left empty.
    ///@{
    dgram_server(dgram_server &&other) noexcept = default;
    dgram_server &operator=(dgram_server &&other) noexcept {
        srv_ = std::move(other.srv_); // ours is freed before our callbacks go
        cb_ = std::move(other.cb_);
        return *this;
    }
    ///@}
    dgram_server(const dgram_server &) = delete;
    dgram_server &operator=(const dgram_server &) = delete;
    /// Stops and frees the server, then the handler.
    ~dgram_server() { srv_.reset(); }

    /// The C handle, for calls the wrapper does not cover; still owned here.
    sockserv_dgram_server *get() const noexcept { return srv_.get(); }
    /// Whether there is a server.
    explicit operator bool() const noexcept { return srv_ != nullptr; }

private:
    void bind_or_throw(const std::string &addr, const sockserv_config *cfg) {
        sockserv_dgram_server *raw = nullptr;
        detail::check(sockserv_dgram_server_new(addr.c_str(), cfg, &raw), "sockserv_dgram_server_new");
        srv_.reset(raw);
    }
    detail::dgram_callbacks &callbacks() {
        if (!cb_)
            cb_ = std::make_unique<detail::dgram_callbacks>();
        return *cb_;
    }
    struct deleter {
        void operator()(sockserv_dgram_server *s) const noexcept { sockserv_dgram_server_free(s); }
    };
    // Declared first, destroyed last: after the server that calls into it.
    std::unique_ptr<detail::dgram_callbacks> cb_;
    std::unique_ptr<sockserv_dgram_server, deleter> srv_;
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
