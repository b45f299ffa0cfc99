#!/bin/sh
# The echo example over mutual TLS with an HMAC key inside it: a throwaway
# CA and certificates made with the openssl command line (make-certs.sh),
# an authenticated exchange, then a client that trusts ANOTHER CA (refused:
# the demo fails if it was not), a client without a certificate (refused by
# the server), the server still serving, and a clean stop with SIGTERM.
# Usage: demo-tls.sh BUILD_DIR   (run by `make -C c_examples demo-tls`)
set -eu

build=${1:?usage: demo-tls.sh BUILD_DIR}
here=$(cd "$(dirname "$0")" && pwd)
key="demo-key-$$"
command -v openssl >/dev/null 2>&1 || {
    echo "demo-tls: the openssl command line is needed (apt-get install openssl)" >&2
    exit 1
}
tmp=$(mktemp -d "$build/demo-tls.XXXXXX")
server=
cleanup() {
    if [ -n "$server" ]; then kill -KILL "$server" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

say() { printf '%s\n' "$*"; }

say "== sockserv TLS demo: mutual TLS 1.3 with an HMAC-SHA256 key inside =="
say "\$ make-certs.sh DIR; make-certs.sh DIR other     # two unrelated throwaway CAs"
sh "$here/make-certs.sh" "$tmp"
sh "$here/make-certs.sh" "$tmp" other
for f in ca server client other-ca; do
    printf '  %-14s %s\n' "$f.pem" "$(openssl x509 -in "$tmp/$f.pem" -noout -subject)"
done
say

say "\$ SOCKSERV_KEY=... echo_server -v -C server.pem -K server.key -A ca.pem tls://127.0.0.1:0 &"
SOCKSERV_KEY=$key "$build/echo_server" -v -C "$tmp/server.pem" -K "$tmp/server.key" \
    -A "$tmp/ca.pem" tls://127.0.0.1:0 >"$tmp/server.out" &
server=$!

# The server prints "listening on ADDR" once bound; wait up to 10 s for it.
tries=0
until grep -q '^listening on ' "$tmp/server.out" 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ] || ! kill -0 "$server" 2>/dev/null; then
        say "demo-tls: the server did not start"
        exit 1
    fi
    sleep 0.1
done
cat "$tmp/server.out"
addr=$(sed -n 's/^listening on //p' "$tmp/server.out")
case $addr in
tls://*) ;;
*) say "demo-tls: FAILED: the server does not announce a tls:// address: $addr"; exit 1 ;;
esac

say
say "\$ SOCKSERV_KEY=... echo_client -A ca.pem -C client.pem -K client.key $addr hello 'over mutual TLS'"
SOCKSERV_KEY=$key "$build/echo_client" -A "$tmp/ca.pem" -C "$tmp/client.pem" -K "$tmp/client.key" \
    "$addr" hello 'over mutual TLS'

# refused WHAT ARGS...: runs echo_client, which must fail.
refused() {
    what=$1
    shift
    status=0
    SOCKSERV_KEY=$key "$build/echo_client" "$@" "$addr" 'must not arrive' || status=$?
    if [ "$status" -eq 0 ]; then
        say "demo-tls: FAILED: $what was accepted"
        exit 1
    fi
    say "(exit status $status, as expected: $what is refused)"
}

say
say "\$ echo_client -A other-ca.pem -C client.pem -K client.key $addr ...   # trusts another CA"
refused "a client trusting another CA" -A "$tmp/other-ca.pem" -C "$tmp/client.pem" -K "$tmp/client.key"

say
say "\$ echo_client -A ca.pem $addr ...   # no client certificate"
refused "a client without a certificate" -A "$tmp/ca.pem"

say
say "\$ echo_client -A ca.pem -C other-client.pem -K other-client.key $addr ...   # certificate from another CA"
refused "a client certificate from another CA" -A "$tmp/ca.pem" -C "$tmp/other-client.pem" -K "$tmp/other-client.key"

say
say "\$ SOCKSERV_KEY=... echo_client -A ca.pem -C client.pem -K client.key $addr 'still serving'"
SOCKSERV_KEY=$key "$build/echo_client" -A "$tmp/ca.pem" -C "$tmp/client.pem" -K "$tmp/client.key" \
    "$addr" 'still serving'

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
    say "demo-tls: FAILED: the server exited with status $status"
    exit 1
fi
say "(the server exited with status 0)"
say "== demo-tls OK =="
