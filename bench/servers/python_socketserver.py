"""Python's socketserver.ThreadingTCPServer as a framed echo server: the
system sockserv replaces. A thread per connection; the handler reads the
4-byte header and the payload from self.rfile and writes the frame back.
No key (Python 3.11's keyed handshake is the legacy MD5 one).

Usage: python_socketserver.py [-p PORT]; prints "listening tcp://127.0.0.1:PORT",
dies on SIGTERM (the default action: a Python handler needs the GIL, which
10,000 handler threads waking up to their closed connections keep busy for
many seconds).
"""

import argparse
import resource
import signal
import socketserver
import struct


class Echo(socketserver.StreamRequestHandler):
    disable_nagle_algorithm = True  # like every other server measured

    def handle(self):
        read, write = self.rfile.read, self.wfile.write
        try:
            while True:
                head = read(4)
                if len(head) < 4:
                    return
                (n,) = struct.unpack("!i", head)
                if n < 0:
                    return
                payload = read(n)
                if len(payload) < n:
                    return
                write(head + payload)
        except OSError:
            return  # the client went away mid-frame


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False  # SIGTERM must not wait for 10,000 handler threads
    allow_reuse_address = True
    request_queue_size = 4096  # the default 5 drops SYNs under fan-in


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-p", "--port", type=int, default=0)
    port = ap.parse_args().port
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with Server(("127.0.0.1", port), Echo) as srv:
        print(f"listening tcp://127.0.0.1:{srv.server_address[1]}", flush=True)
        try:
            srv.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
