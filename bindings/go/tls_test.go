package sockserv_test

import (
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"sockserv"
)

// makeCerts runs c_examples/make-certs.sh (the openssl command line) into
// a temporary directory: ca, server, client, and an unrelated other-ca.
func makeCerts(t *testing.T) string {
	t.Helper()
	if err := exec.Command("openssl", "version").Run(); err != nil {
		t.Skip("the openssl command line is not installed (apt-get install openssl)")
	}
	dir := t.TempDir()
	script := filepath.Join("..", "..", "c_examples", "make-certs.sh")
	for _, extra := range [][]string{nil, {"other"}} {
		out, err := exec.Command("sh", append([]string{script, dir}, extra...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("make-certs.sh: %v\n%s", err, out)
		}
	}
	return dir
}

func fingerprint(t *testing.T, path string) [32]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	return sha256.Sum256(block.Bytes)
}

func TestMutualTLS(t *testing.T) {
	dir := makeCerts(t)
	f := func(name string) string { return filepath.Join(dir, name) }
	read := func(name string) []byte {
		b, err := os.ReadFile(f(name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cfg := keyed(key)
	cfg.TLSCertFile, cfg.TLSKeyFile = f("server.pem"), f("server.key")
	cfg.TLSCAFile = f("ca.pem")
	cfg.TLSClientAuth = sockserv.TLSClientAuthRequired
	cfg.TLSALPN = []string{"echo/1"}
	srv, addr := mustListen(t, "tls://127.0.0.1:0", cfg)
	if !strings.HasPrefix(addr, "tls://127.0.0.1:") {
		t.Fatalf("address %q", addr)
	}
	var mu sync.Mutex
	var subject string
	srv.Handle(func(c *sockserv.Conn) {
		s, _ := c.PeerCertSubject()
		mu.Lock()
		subject = s
		mu.Unlock()
		echo(c)
	})
	srv.Start()

	client := func(ca string, withCert bool) *sockserv.Config {
		c := keyed(key)
		c.TLSCA = read(ca)
		c.TLSServerName = "localhost"
		c.TLSALPN = []string{"echo/1"}
		if withCert {
			c.TLSCert, c.TLSKey = read("client.pem"), read("client.key")
		}
		return c
	}
	c := mustDial(t, addr, client("ca.pem", true))
	if got := exchange(t, c, []byte("over mutual TLS")); string(got) != "over mutual TLS" {
		t.Fatalf("got %q", got)
	}
	if fp, err := c.PeerCertSHA256(); err != nil || fp != fingerprint(t, f("server.pem")) {
		t.Fatalf("server fingerprint %x, %v", fp, err)
	}
	if v, alpn, err := c.TLSInfo(); err != nil || v != sockserv.TLSVersion13 || alpn != "echo/1" {
		t.Fatalf("tls info %#x %q %v", v, alpn, err)
	}
	c.Close()
	eventually(t, "the handler to see the client", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(subject, "CN=client")
	})

	// Another CA: ErrCertificate, naming why.
	_, err := sockserv.Dial(addr, client("other-ca.pem", true))
	if !errors.Is(err, sockserv.ErrCertificate) || !strings.Contains(err.Error(), "unknown issuer") {
		t.Fatalf("another CA: %v", err)
	}
	// No client certificate: refused by the server.
	if c, err := sockserv.Dial(addr, client("ca.pem", false)); err == nil {
		if _, err = c.Recv(); err == nil {
			t.Fatal("a client without a certificate was served")
		}
		c.Close()
	}
	// A plain connection has no certificate.
	plain, plainAddr := mustListen(t, "tcp://127.0.0.1:0", nil)
	plain.Handle(echo)
	plain.Start()
	p := mustDial(t, plainAddr, nil)
	if _, err := p.PeerCertSHA256(); !errors.Is(err, sockserv.ErrInvalidState) {
		t.Fatalf("plain PeerCertSHA256: %v", err)
	}
	// A bad CA: refused at once.
	bad := keyed(key)
	bad.TLSCA = []byte("not PEM")
	if _, err := sockserv.Dial(addr, bad); !errors.Is(err, sockserv.ErrInvalidArgument) {
		t.Fatalf("bad CA: %v", err)
	}
}
