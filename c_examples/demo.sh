#!/bin/sh
# The echo example end to end: an authenticated echo server on a free port,
# a client with the right key, one with a wrong key (refused), the server
# still serving after it, then a clean stop with SIGTERM.
# Usage: demo.sh BUILD_DIR   (run by `make -C c_examples demo`)
set -eu

build=${1:?usage: demo.sh BUILD_DIR}
key="demo-key-$$"
tmp=$(mktemp -d)
server=
cleanup() {
    if [ -n "$server" ]; then kill -KILL "$server" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

say() { printf '%s\n' "$*"; }

say "== sockserv demo: echo server and clients, HMAC-SHA256 authenticated =="
say "\$ SOCKSERV_KEY=$key echo_server tcp://127.0.0.1:0 &"
SOCKSERV_KEY=$key "$build/echo_server" tcp://127.0.0.1:0 >"$tmp/server.out" &
server=$!

# The server prints "listening on ADDR" once bound; wait up to 10 s for it.
tries=0
until grep -q '^listening on ' "$tmp/server.out" 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ] || ! kill -0 "$server" 2>/dev/null; then
        say "demo: the server did not start"
        exit 1
    fi
    sleep 0.1
done
cat "$tmp/server.out"
addr=$(sed -n 's/^listening on //p' "$tmp/server.out")

say
say "\$ SOCKSERV_KEY=$key echo_client $addr hello 'framed world'"
SOCKSERV_KEY=$key "$build/echo_client" "$addr" hello 'framed world'

say
say "\$ echo_client -k wrong-key $addr hello      # must be refused"
status=0
"$build/echo_client" -k wrong-key "$addr" hello || status=$?
if [ "$status" -eq 0 ]; then
    say "demo: FAILED: the wrong key was accepted"
    exit 1
fi
say "(exit status $status, as expected: a wrong key is refused)"

say
if [ -x "$build/raii_client" ]; then
    say "\$ SOCKSERV_KEY=$key raii_client $addr 'still serving, from C++'"
    SOCKSERV_KEY=$key "$build/raii_client" "$addr" 'still serving, from C++'
else
    say "\$ SOCKSERV_KEY=$key echo_client $addr 'still serving'"
    SOCKSERV_KEY=$key "$build/echo_client" "$addr" 'still serving'
fi

say
say "\$ kill -TERM <server>"
kill -TERM "$server"
# Wait for it to exit, with a watchdog that kills it after 10 s.
(sleep 10 && kill -KILL "$server") >/dev/null 2>&1 &
watchdog=$!
status=0
wait "$server" || status=$?
server=
kill "$watchdog" 2>/dev/null || true
if [ "$status" -ne 0 ]; then
    say "demo: FAILED: the server exited with status $status"
    exit 1
fi
say "(the server exited with status 0)"
say "== demo OK =="
