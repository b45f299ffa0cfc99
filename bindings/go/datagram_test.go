package sockserv_test

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sockserv"
)

func upperServer(t *testing.T, addr string, cfg *sockserv.Config) (*sockserv.DatagramServer, string) {
	t.Helper()
	srv, err := sockserv.ListenDatagramServer(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	err = srv.Handle(func(sock *sockserv.DatagramConn, data []byte, from string) {
		if string(data) == "panic" {
			panic("datagram handler blew up")
		}
		sock.SendTo(from, bytes.ToUpper(data))
	})
	if err != nil {
		t.Fatal(err)
	}
	bound, err := srv.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return srv, bound
}

// closeLater(t)(sockserv.DialDatagram(...)): the socket, with a bounded
// timeout, closed when the test ends.
func closeLater(t *testing.T) func(*sockserv.DatagramConn, error) *sockserv.DatagramConn {
	return func(d *sockserv.DatagramConn, err error) *sockserv.DatagramConn {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		if err := d.SetTimeout(wait); err != nil {
			t.Fatal(err)
		}
		return d
	}
}

// Sealed UDP datagrams: a keyed server and clients, a wrong key dropped
// and counted, a panic contained, the size limit.
func TestSealedDatagrams(t *testing.T) {
	cfg := &sockserv.Config{AuthKey: key, MaxDatagramSize: 1000}
	srv, addr := upperServer(t, "udp://127.0.0.1:0", cfg)
	var panics int32
	srv.OnPanic(func(string, interface{}) { atomic.AddInt32(&panics, 1) })
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	c := closeLater(t)(sockserv.DialDatagram(addr, cfg))
	if err := c.Send([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Recv(); err != nil || string(got) != "HELLO" {
		t.Fatalf("got %q %v", got, err)
	}
	// An unbound socket: bound by its first send, told who answered.
	u := closeLater(t)(sockserv.ListenDatagram("", cfg))
	if _, err := u.LocalAddr(); !errors.Is(err, sockserv.ErrInvalidState) {
		t.Fatalf("address of an unbound socket: %v", err)
	}
	u.SendTo(addr, []byte("from anywhere"))
	got, from, err := u.RecvFrom()
	if err != nil || string(got) != "FROM ANYWHERE" || from != addr {
		t.Fatalf("got %q from %q: %v", got, from, err)
	}
	if err := c.Send(make([]byte, 1001)); !errors.Is(err, sockserv.ErrDatagramTooLarge) {
		t.Fatalf("over the maximum: %v", err)
	}
	// A wrong key: nothing comes back, the server counts a bad tag.
	wrong := closeLater(t)(sockserv.DialDatagram(addr, &sockserv.Config{AuthKey: []byte("wrong")}))
	wrong.SetTimeout(200 * time.Millisecond)
	wrong.Send([]byte("let me in"))
	if _, err := wrong.Recv(); !errors.Is(err, sockserv.ErrTimedOut) {
		t.Fatalf("wrong key: %v", err)
	}
	c.Send([]byte("panic"))
	eventually(t, "the panic to be reported", func() bool { return atomic.LoadInt32(&panics) == 1 })
	c.Send([]byte("still here"))
	if got, err := c.Recv(); err != nil || string(got) != "STILL HERE" {
		t.Fatalf("got %q %v", got, err)
	}
	eventually(t, "the counters", func() bool {
		st, _ := srv.Stats()
		return st.Received == 4 && st.Sent == 3 && st.BadTag == 1
	})
	// The server's socket does not receive: datagrams go to the handler.
	if _, _, err := srv.Socket().RecvFrom(); !errors.Is(err, sockserv.ErrInvalidState) {
		t.Fatalf("receive on a server's socket: %v", err)
	}
	if st, _ := c.Stats(); st.Sent != 3 || st.Received != 2 {
		t.Fatalf("client counters %+v", st)
	}
}

// A plain socket sees the sealed bytes: replayed and forged, the keyed
// server drops them and counts each.
func TestDatagramReplayRefused(t *testing.T) {
	tap := closeLater(t)(sockserv.ListenDatagram("udp://127.0.0.1:0", nil))
	tapAddr, _ := tap.LocalAddr()
	sender := closeLater(t)(sockserv.ListenDatagram("", &sockserv.Config{AuthKey: key}))
	sender.SendTo(tapAddr, []byte("once only"))
	wire, _, err := tap.RecvFrom()
	if err != nil {
		t.Fatal(err)
	}
	if len(wire) != len("once only")+57 {
		t.Fatalf("sealed datagram of %d bytes", len(wire))
	}
	var delivered int32
	srv, err := sockserv.ListenDatagramServer("udp://127.0.0.1:0", &sockserv.Config{AuthKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.Handle(func(_ *sockserv.DatagramConn, data []byte, _ string) {
		if string(data) == "once only" {
			atomic.AddInt32(&delivered, 1)
		}
	})
	srv.Start()
	addr, _ := srv.Addr()
	tap.SendTo(addr, wire)
	tap.SendTo(addr, wire)
	forged := append([]byte(nil), wire...)
	forged[len(forged)-1] ^= 1
	tap.SendTo(addr, forged)
	eventually(t, "the replay and the forgery to be counted", func() bool {
		st, _ := srv.Stats()
		return st.Replayed == 1 && st.BadTag == 1 && st.Received == 1
	})
	if atomic.LoadInt32(&delivered) != 1 {
		t.Fatalf("delivered %d times", delivered)
	}
}

// Unix datagrams, served on this goroutine until the handler shuts down.
func TestUnixDatagramServe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock")
	srv, err := sockserv.ListenDatagramServer("unixgram://"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle(func(sock *sockserv.DatagramConn, data []byte, from string) {
		if string(data) == "stop" {
			srv.Shutdown()
			return
		}
		sock.SendTo(from, data)
	})
	serveUnixUntilShutdown(t, srv, path, func() error {
		c, err := sockserv.ListenDatagram("", nil)
		if err == nil {
			c.SetTimeout(wait)
			c.SendTo("unixgram://"+path, []byte("unix hello"))
			var got []byte
			if got, _, err = c.RecvFrom(); err == nil && string(got) != "unix hello" {
				err = errors.New("wrong echo " + string(got))
			}
			c.SendTo("unixgram://"+path, []byte("stop"))
			c.Close()
		}
		return err
	})
}

// Plain UDP with Python's socket module (no key: plain datagrams).
func TestPythonUDPToGoDatagramServer(t *testing.T) {
	py := python(t)
	srv, addr := upperServer(t, "udp://127.0.0.1:0", nil)
	srv.Start()
	port := addr[strings.LastIndex(addr, ":")+1:]
	script := `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b"python datagram", ("127.0.0.1", int(sys.argv[1])))
data, _ = s.recvfrom(65536)
assert data == b"PYTHON DATAGRAM", data
print("python udp ok")
`
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "-c", script, port).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "python udp ok") {
		t.Fatalf("python: %v\n%s", err, out)
	}
}
