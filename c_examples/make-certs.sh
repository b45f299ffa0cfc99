#!/bin/sh
# Makes a throwaway certificate authority and certificates signed by it,
# with the openssl command-line tool (OpenSSL 3.0, Debian 12, or later):
#
#   make-certs.sh DIR          DIR/ca.pem DIR/ca.key       the CA
#                              DIR/server.pem DIR/server.key  for localhost,
#                                  127.0.0.1 and ::1 (serverAuth)
#                              DIR/client.pem DIR/client.key  CN=client
#                                  (clientAuth), for mutual TLS
#   make-certs.sh DIR other    DIR/other-ca.pem ...        a second, unrelated
#                                  CA (and its server/client certificates)
#
# Keys are ECDSA P-256, unencrypted (-nodes): for tests and demos. The
# commands are the ones docs/tls.md explains. Certificates are valid for
# DAYS days (default 2) from now.
set -eu

dir=${1:?usage: make-certs.sh DIR [PREFIX]}
prefix=${2:-}
prefix=${prefix:+$prefix-}
days=${DAYS:-2}
mkdir -p "$dir"
cd "$dir"

ca=${prefix}ca
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$ca.key" -out "$ca.pem" -days "$days" \
    -subj "/O=sockserv demo/CN=${prefix}sockserv demo CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# leaf NAME SUBJECT EXTENSIONS: a key, a request, and the certificate the CA
# signs for it.
leaf() {
    name=$prefix$1
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$name.key" -out "$name.csr" -subj "$2" 2>/dev/null
    printf '%s\n' "$3" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA "$ca.pem" -CAkey "$ca.key" \
        -CAcreateserial -days "$days" -extfile "$name.ext" -out "$name.pem" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

leaf server "/O=sockserv demo/CN=localhost" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"

leaf client "/O=sockserv demo/CN=client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

rm -f "$ca.srl"
