// cxx_echo: sockserv.hpp in one program. An authenticated echo server in
// threaded mode (a lambda per connection) and one in event mode (lambdas
// for open/frame/close), a client for each, a sealed UDP datagram echo,
// and a client with a wrong key.
//
//     ./cxx_echo [MESSAGE...]
//
// Exits 0 when every message came back and the wrong key was refused.

#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "sockserv.hpp"

int main(int argc, char **argv) {
    std::vector<std::string> messages(argv + 1, argv + argc);
    if (messages.empty())
        messages = {"hello", "framed world"};

    try {
        sockserv::config cfg;
        cfg.set_auth_key("correct horse battery staple").set_io_timeout_ms(10000);

        // Threaded mode: the handler runs on its connection's own thread and
        // may block; the connection closes when it returns.
        sockserv::server threaded("tcp://127.0.0.1:0", cfg);
        threaded.on_connection([](sockserv::conn_ref conn) {
            // The nothrow receive ends the loop when the peer closes.
            for (sockserv::bytes frame; conn.recv(frame, std::nothrow) == SOCKSERV_OK;)
                conn.send(frame);
        });
        threaded.start();

        // Event mode: callbacks run on I/O threads and must not block;
        // send() only queues. on_close is left out (nullptr).
        sockserv::server evented("tcp://127.0.0.1:0", cfg);
        evented.on_events([](sockserv::conn_ref conn) { conn.send("welcome"); },
                          [](sockserv::conn_ref conn, sockserv::bytes frame) { conn.send(frame); },
                          nullptr);
        evented.start();

        for (sockserv::server *srv : {&threaded, &evented}) {
            const std::string addr = srv->local_addr();
            sockserv::connection conn(addr, cfg); // connects and authenticates
            if (srv == &evented)
                std::cout << "event    " << addr << " greeted \"" << conn.recv_string() << "\"\n";
            for (const std::string &m : messages) {
                conn.send(m);
                std::cout << (srv == &threaded ? "threaded " : "event    ") << addr << " echoed \""
                          << conn.recv_string() << "\"\n";
            }
        } // each connection closes here

        // Datagrams: a UDP server sealed with the same key (each datagram
        // carries a timestamp and an HMAC tag; replays are refused), and a
        // client socket connected to it.
        sockserv::dgram_server udp("udp://127.0.0.1:0", cfg);
        udp.on_datagram([](sockserv::dgram_ref sock, sockserv::bytes data, std::string_view from) {
            sock.send_to(std::string(from), data); // replies never wait
        });
        udp.start();
        sockserv::dgram client = sockserv::dgram::connect(udp.local_addr(), cfg);
        for (const std::string &m : messages) {
            client.send(m);
            std::cout << "datagram " << udp.local_addr() << " echoed \"" << client.recv_string()
                      << "\"\n";
        }
        const sockserv::dgram_stats counted = client.stats();
        std::cout << "datagram client sent " << counted.sent << ", received " << counted.received
                  << "\n";

        sockserv::config wrong;
        wrong.set_auth_key("not the key");
        try {
            sockserv::connection conn(threaded.local_addr(), wrong);
            std::cerr << "cxx_echo: the wrong key was accepted\n";
            return 1;
        } catch (const sockserv::error &e) {
            std::cout << "wrong key refused: code " << e.code() << ", " << e.detail() << "\n";
        }
        return 0; // the servers stop, close and join in their destructors
    } catch (const sockserv::error &e) {
        std::cerr << "cxx_echo: " << e.what() << "\n";
        return 1;
    }
}
