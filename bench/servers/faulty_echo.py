"""A framed echo server that goes wrong on purpose after some frames, so
`bench/run --check` can show the load generator catches each fault.

Usage: faulty_echo.py --fault flip|swap|drop|dup|cross [--after N] [-p PORT]
  flip   one payload bit of frame N changes
  swap   frames N and N+1 come back in the other order
  drop   frame N never comes back
  dup    frame N comes back twice
  cross  frame N goes back on the connection accepted before this one
Prints "listening tcp://127.0.0.1:PORT"; exits 0 on SIGTERM.
"""

import argparse
import signal
import socketserver
import struct
import sys
import threading

ARGS = None
conns = []  # accepted sockets, in order (for "cross")
lock = threading.Lock()


class Faulty(socketserver.StreamRequestHandler):
    def handle(self):
        with lock:
            conns.append(self.request)
            prev = conns[-2] if len(conns) > 1 else None
        try:
            self.serve(prev)
        except OSError:
            return  # the load generator hung up on noticing the fault

    def serve(self, prev):
        held, i = None, 0
        while True:
            head = self.rfile.read(4)
            if len(head) < 4:
                return
            payload = self.rfile.read(struct.unpack("!i", head)[0])
            frame = bytearray(head + payload)
            # Counting from 0, the load generator's ping being frame 0.
            i += 1
            if i - 1 != ARGS.after:
                self.wfile.write(frame)
                if held is not None:
                    self.wfile.write(held)
                    held = None
                continue
            if ARGS.fault == "flip":
                frame[-1] ^= 1
                self.wfile.write(frame)
            elif ARGS.fault == "swap":
                held = frame
            elif ARGS.fault == "dup":
                self.wfile.write(frame + frame)
            elif ARGS.fault == "cross" and prev is not None:
                prev.sendall(frame)
            # "drop" (and "cross" without a neighbour) sends nothing


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--fault", required=True, choices=["flip", "swap", "drop", "dup", "cross"])
    ap.add_argument("--after", type=int, default=100)
    ap.add_argument("-p", "--port", type=int, default=0)
    ARGS = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Server(("127.0.0.1", ARGS.port), Faulty) as srv:
        print(f"listening tcp://127.0.0.1:{srv.server_address[1]}", flush=True)
        srv.serve_forever()


if __name__ == "__main__":
    main()
