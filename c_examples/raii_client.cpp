// raii_client: the echo client in C++, with small RAII wrappers that free
// sockserv handles on every path and turn failure codes into exceptions.
//
//     SOCKSERV_KEY=secret ./raii_client tcp://127.0.0.1:9000 hello world
//
// Exits 0 when every message came back, 1 on any failure.

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "sockserv.h"

namespace sockserv {

// A failed call: the code, its static text and the thread's detail.
class Error : public std::runtime_error {
public:
    Error(const std::string &what, sockserv_result code)
        : std::runtime_error(what + ": " + sockserv_strerror(code) + " (" + last_error() + ")"),
          code_(code) {}
    sockserv_result code() const noexcept { return code_; }

private:
    // sockserv_last_error returns the full length, like snprintf: ask, then copy.
    static std::string last_error() {
        std::vector<char> buf(sockserv_last_error(nullptr, 0) + 1);
        sockserv_last_error(buf.data(), buf.size());
        return buf.data();
    }
    sockserv_result code_;
};

inline void check(sockserv_result rc, const std::string &what) {
    if (rc != SOCKSERV_OK)
        throw Error(what, rc);
}

// unique_ptr deleters: *_free is called exactly once, whatever happens.
struct ConfigFree {
    void operator()(sockserv_config *c) const noexcept { sockserv_config_free(c); }
};
struct ConnFree {
    void operator()(sockserv_conn *c) const noexcept { sockserv_conn_free(c); }
};
using ConfigPtr = std::unique_ptr<sockserv_config, ConfigFree>;
using ConnPtr = std::unique_ptr<sockserv_conn, ConnFree>;

inline ConfigPtr make_config(const std::string &key) {
    sockserv_config *raw = nullptr;
    check(sockserv_config_new(&raw), "sockserv_config_new");
    ConfigPtr config(raw); // owned from here on, even if a setter throws
    if (!key.empty())
        check(sockserv_config_set_auth_key(config.get(),
                                           reinterpret_cast<const uint8_t *>(key.data()),
                                           key.size()),
              "setting the key");
    check(sockserv_config_set_io_timeout_ms(config.get(), 10000), "setting the timeout");
    return config;
}

// A client connection: movable, not copyable, closed by its destructor.
class Connection {
public:
    Connection(const std::string &addr, const sockserv_config *config) {
        sockserv_conn *raw = nullptr;
        check(sockserv_connect(addr.c_str(), config, &raw), "connecting to " + addr);
        conn_.reset(raw);
    }

    void send(const std::string &message) {
        check(sockserv_conn_send(conn_.get(), reinterpret_cast<const uint8_t *>(message.data()),
                                 message.size()),
              "send");
    }

    // Copies the next frame into a buffer that grows when the frame does not
    // fit: the frame stays queued and `len` says how much room it needs.
    std::string recv() {
        for (;;) {
            size_t len = 0;
            sockserv_result rc = sockserv_conn_recv_into(
                conn_.get(), reinterpret_cast<uint8_t *>(&buf_[0]), buf_.size(), &len);
            if (rc == SOCKSERV_ERR_INSUFFICIENT_SIZE) {
                buf_.resize(len);
                continue;
            }
            check(rc, "receive");
            return buf_.substr(0, len);
        }
    }

private:
    ConnPtr conn_;
    std::string buf_ = std::string(16, '\0'); // small on purpose, to show the growth
};

} // namespace sockserv

int main(int argc, char **argv) {
    int first = 1;
    std::string key;
    if (const char *env = std::getenv("SOCKSERV_KEY"))
        key = env;
    if (argc > 2 && std::strcmp(argv[1], "-k") == 0) {
        key = argv[2];
        first = 3;
    }
    if (first >= argc) {
        std::cerr << "usage: raii_client [-k KEY] ADDR [MESSAGE...]   (or the key in SOCKSERV_KEY)\n";
        return 2;
    }
    try {
        sockserv::ConfigPtr config = sockserv::make_config(key);
        sockserv::Connection conn(argv[first], config.get()); // copies the config
        config.reset();                                       // so it can go now
        for (int i = first + 1; i < argc; i++) {
            conn.send(argv[i]);
            std::cout << conn.recv() << '\n';
        }
        return 0; // conn's destructor closes the connection
    } catch (const sockserv::Error &e) {
        std::cerr << "raii_client: " << e.what() << '\n';
        return 1;
    }
}
