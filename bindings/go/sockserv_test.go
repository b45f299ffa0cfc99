package sockserv_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"sockserv"
)

// Every wait in these tests is bounded by wait.
const wait = 10 * time.Second

var key = []byte("go binding key")

func keyed(k []byte) *sockserv.Config {
	return &sockserv.Config{AuthKey: k, IOTimeout: wait, HandshakeTimeout: 5 * time.Second}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func echo(c *sockserv.Conn) {
	for {
		frame, err := c.Recv()
		if err != nil {
			return
		}
		if c.Send(frame) != nil {
			return
		}
	}
}

func mustListen(t *testing.T, addr string, cfg *sockserv.Config) (*sockserv.Server, string) {
	t.Helper()
	srv, err := sockserv.Listen(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	bound, err := srv.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return srv, bound
}

func mustDial(t *testing.T, addr string, cfg *sockserv.Config) *sockserv.Conn {
	t.Helper()
	c, err := sockserv.Dial(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func exchange(t *testing.T, c *sockserv.Conn, msg []byte) []byte {
	t.Helper()
	if err := c.Send(msg); err != nil {
		t.Fatal(err)
	}
	got, err := c.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestVersion(t *testing.T) {
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(sockserv.Version()) {
		t.Fatalf("version %q", sockserv.Version())
	}
}

func TestErrorsCarryCodeAndDetail(t *testing.T) {
	// A port nobody listens on: bind one, note it, close the server.
	srv, addr := mustListen(t, "tcp://127.0.0.1:0", nil)
	srv.Close()
	_, err := sockserv.Dial(addr, nil)
	if !errors.Is(err, sockserv.ErrConnectionRefused) {
		t.Fatalf("dial a closed port: %v", err)
	}
	var se *sockserv.Error
	if !errors.As(err, &se) || se.Op != "sockserv_connect" || !strings.Contains(se.Detail, addr) {
		t.Fatalf("no op or detail naming %s: %#v", addr, err)
	}
	if !strings.Contains(err.Error(), sockserv.ErrConnectionRefused.Error()) {
		t.Fatalf("message %q lacks the code's text", err)
	}
	if _, err := sockserv.Dial("tcp:/nonsense", nil); !errors.Is(err, sockserv.ErrInvalidAddress) {
		t.Fatalf("bad address: %v", err)
	}
	// Settings the library refuses, and one refused before it is asked.
	if _, err := sockserv.Listen("tcp://127.0.0.1:0", &sockserv.Config{AuthKey: []byte{}}); !errors.Is(err, sockserv.ErrInvalidArgument) {
		t.Fatalf("empty key: %v", err)
	}
	if _, err := sockserv.Listen("tcp://127.0.0.1:0", &sockserv.Config{IOTimeout: -time.Second}); !errors.Is(err, sockserv.ErrInvalidArgument) {
		t.Fatalf("negative timeout: %v", err)
	}
	// The address in use.
	_, taken := mustListen(t, "tcp://127.0.0.1:0", nil)
	if _, err := sockserv.Listen(taken, nil); err == nil {
		// SO_REUSEADDR does not let two listeners share a port.
		t.Fatal("a second listener on the same port")
	} else if !errors.Is(err, sockserv.ErrAddressInUse) {
		t.Fatalf("address in use: %v", err)
	}
	if sockserv.ErrClosed.String() == "" || sockserv.Code(9999).Error() == "" {
		t.Fatal("no text for a code")
	}
}

func TestThreadedServerAuthenticated(t *testing.T) {
	srv, addr := mustListen(t, "tcp://127.0.0.1:0", keyed(key))
	var peers sync.Map
	var handled int32
	if err := srv.Verify(func(peer string) bool { peers.Store(peer, true); return true }); err != nil {
		t.Fatal(err)
	}
	if err := srv.Handle(func(c *sockserv.Conn) { echo(c); atomic.AddInt32(&handled, 1) }); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	c := mustDial(t, addr, keyed(key))
	for i := 0; i < 100; i++ {
		msg := []byte(fmt.Sprintf("message %d", i))
		if got := exchange(t, c, msg); !bytes.Equal(got, msg) {
			t.Fatalf("got %q for %q", got, msg)
		}
	}
	big := bytes.Repeat([]byte("z"), 1<<20)
	if got := exchange(t, c, big); !bytes.Equal(got, big) {
		t.Fatal("the 1 MiB frame came back different")
	}
	if got := exchange(t, c, nil); len(got) != 0 {
		t.Fatalf("empty frame came back as %q", got)
	}
	if peer, _ := c.PeerAddr(); peer != addr {
		t.Fatalf("peer %q, want %q", peer, addr)
	}
	local, _ := c.LocalAddr()
	if _, ok := peers.Load(local); !ok {
		t.Fatalf("verify did not see %s", local)
	}
	// Nothing to read: Poll says so; a short timeout ends a receive.
	if ready, err := c.Poll(0); err != nil || ready {
		t.Fatalf("poll: %v %v", ready, err)
	}
	if err := c.SetTimeout(50 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Recv(); !errors.Is(err, sockserv.ErrTimedOut) {
		t.Fatalf("recv with nothing sent: %v", err)
	}
	c.Close()
	eventually(t, "the handler to return", func() bool { return atomic.LoadInt32(&handled) == 1 })

	// A wrong key: ErrAuthFailed, counted by the server.
	_, err := sockserv.Dial(addr, keyed([]byte("wrong")))
	if !errors.Is(err, sockserv.ErrAuthFailed) {
		t.Fatalf("wrong key: %v", err)
	}
	eventually(t, "the failure to be counted", func() bool {
		st, _ := srv.Stats()
		return st.HandshakeFailures == 1 && st.Accepted == 2 && st.Handled == 1
	})
	// Rotation: a server that also takes an old key.
	cfg := keyed([]byte("new"))
	cfg.ExtraAuthKeys = [][]byte{[]byte("old")}
	rot, rotAddr := mustListen(t, "tcp://127.0.0.1:0", cfg)
	rot.Handle(echo)
	rot.Start()
	if got := exchange(t, mustDial(t, rotAddr, keyed([]byte("old"))), []byte("rotated")); string(got) != "rotated" {
		t.Fatalf("got %q", got)
	}
	// The handler cannot change once the server runs.
	if err := srv.Handle(echo); !errors.Is(err, sockserv.ErrInvalidState) {
		t.Fatalf("Handle after Start: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	srv, addr := mustListen(t, "tcp://127.0.0.1:0", keyed(key))
	var panics int32
	srv.OnPanic(func(string, interface{}) { atomic.AddInt32(&panics, 1) })
	var calls int32
	srv.Verify(func(string) bool {
		switch atomic.AddInt32(&calls, 1) {
		case 1:
			return false
		case 2:
			panic("verify blew up")
		}
		return true
	})
	srv.Handle(echo)
	srv.Start()
	for i := 0; i < 2; i++ {
		if _, err := sockserv.Dial(addr, keyed(key)); err == nil {
			t.Fatalf("refused peer %d got in", i)
		}
	}
	if got := exchange(t, mustDial(t, addr, keyed(key)), []byte("third")); string(got) != "third" {
		t.Fatalf("got %q", got)
	}
	// Counted as the accept thread goes on: the client may know first.
	eventually(t, "two refusals and one panic", func() bool {
		st, _ := srv.Stats()
		return st.RefusedByVerify == 2 && atomic.LoadInt32(&panics) == 1
	})
}

func TestPanickingHandlerIsContained(t *testing.T) {
	srv, addr := mustListen(t, "tcp://127.0.0.1:0", keyed(key))
	var where atomic.Value
	srv.OnPanic(func(w string, v interface{}) { where.Store(fmt.Sprint(w, ": ", v)) })
	srv.Handle(func(c *sockserv.Conn) {
		frame, err := c.Recv()
		if err == nil && string(frame) == "panic" {
			panic("handler blew up")
		}
		c.Send(frame)
	})
	srv.Start()
	c := mustDial(t, addr, keyed(key))
	c.Send([]byte("panic"))
	if _, err := c.Recv(); !errors.Is(err, sockserv.ErrClosed) {
		t.Fatalf("after the panic: %v", err)
	}
	if w, _ := where.Load().(string); w != "connection handler: handler blew up" {
		t.Fatalf("panic reported as %q", w)
	}
	if got := exchange(t, mustDial(t, addr, keyed(key)), []byte("still")); string(got) != "still" {
		t.Fatalf("got %q", got)
	}
}

func TestEventServer(t *testing.T) {
	cfg := keyed(key)
	cfg.IOThreads = 2
	srv, addr := mustListen(t, "tcp://127.0.0.1:0", cfg)
	var mu sync.Mutex
	opened := map[*sockserv.Conn]bool{}
	var frames int32
	closed := make(chan error, 4)
	err := srv.HandleEvents(sockserv.Events{
		OnOpen: func(c *sockserv.Conn) { mu.Lock(); opened[c] = true; mu.Unlock() },
		OnFrame: func(c *sockserv.Conn, frame []byte) {
			atomic.AddInt32(&frames, 1)
			mu.Lock()
			known := opened[c]
			mu.Unlock()
			if !known {
				frame = []byte("a stranger")
			}
			c.Send(bytes.ToUpper(frame)) // queued, never blocks
		},
		OnClose: func(c *sockserv.Conn, err error) {
			mu.Lock()
			known := opened[c]
			mu.Unlock()
			if !known {
				err = fmt.Errorf("OnClose for a Conn OnOpen never saw (%v)", err)
			}
			closed <- err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	c := mustDial(t, addr, keyed(key))
	for i := 0; i < 50; i++ {
		c.Send([]byte(fmt.Sprintf("frame %d", i)))
	}
	for i := 0; i < 50; i++ {
		got, err := c.Recv()
		if err != nil || string(got) != fmt.Sprintf("FRAME %d", i) {
			t.Fatalf("frame %d: %q %v", i, got, err)
		}
	}
	c.Close()
	select {
	case err := <-closed:
		if !errors.Is(err, sockserv.ErrClosed) {
			t.Fatalf("OnClose after the peer left: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("no OnClose")
	}
	// Another goroutine may send on an event-mode Conn; Close from the
	// server side gives OnClose a nil error.
	srv2, addr2 := mustListen(t, "tcp://127.0.0.1:0", nil)
	closed2 := make(chan error, 1)
	srv2.HandleEvents(sockserv.Events{
		OnFrame: func(c *sockserv.Conn, frame []byte) {
			go func() { c.Send(append([]byte("later: "), frame...)); c.Close() }()
		},
		OnClose: func(_ *sockserv.Conn, err error) { closed2 <- err },
	})
	srv2.Start()
	c2 := mustDial(t, addr2, nil)
	if got := exchange(t, c2, []byte("x")); string(got) != "later: x" {
		t.Fatalf("got %q", got)
	}
	select {
	case err := <-closed2:
		if err != nil {
			t.Fatalf("OnClose after Close: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("no OnClose")
	}
	if atomic.LoadInt32(&frames) != 50 {
		t.Fatalf("%d frames", frames)
	}
}

func TestServeAndShutdownFromHandler(t *testing.T) {
	dir := t.TempDir()
	srv, addr := mustListen(t, "unix://"+filepath.Join(dir, "s.sock"), nil)
	srv.Handle(func(c *sockserv.Conn) {
		echo(c)
		srv.Shutdown()
	})
	serveUnixUntilShutdown(t, srv, filepath.Join(dir, "s.sock"), func() error {
		c, err := sockserv.Dial(addr, nil)
		if err == nil {
			c.Send([]byte("bye"))
			_, err = c.Recv()
			c.Close()
		}
		return err
	})
}

// serveUnixUntilShutdown serves srv on this goroutine while client runs on
// another (the exchange ends with srv shut down), fails the test if either
// fails, then closes srv and checks that its Unix socket file at path is
// gone.
func serveUnixUntilShutdown(t *testing.T, srv interface {
	Serve() error
	Close() error
}, path string, client func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- client() }()
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file left: %v", err)
	}
}

func TestCloseWakesABlockedRecv(t *testing.T) {
	srv, addr := mustListen(t, "tcp://127.0.0.1:0", nil)
	srv.Handle(func(c *sockserv.Conn) { c.Recv() })
	srv.Start()
	c, err := sockserv.Dial(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { _, err := c.Recv(); got <- err }()
	time.Sleep(50 * time.Millisecond)
	c.Close()
	select {
	case err := <-got:
		if err == nil {
			t.Fatal("Recv succeeded on a closed connection")
		}
	case <-time.After(wait):
		t.Fatal("Close did not wake Recv")
	}
	if err := c.Send([]byte("x")); !errors.Is(err, sockserv.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	c.Close() // twice is fine
}

// startChild runs a program that prints one line with the address it
// serves on; it is killed when the test ends.
func startChild(t *testing.T, pattern string, name string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if m := regexp.MustCompile(pattern).FindStringSubmatch(s.Text()); m != nil {
				line <- m[1]
				return
			}
		}
		close(line)
	}()
	select {
	case addr, ok := <-line:
		if !ok {
			t.Fatalf("%s printed no address", name)
		}
		return cmd, addr
	case <-time.After(wait):
		t.Fatalf("%s printed no address in time", name)
	}
	return nil, ""
}

// The C example server (c_examples/echo_server.c), built by the cargo
// test that runs this suite.
func TestWithCEchoServer(t *testing.T) {
	exe := os.Getenv("SOCKSERV_ECHO_SERVER")
	if exe == "" {
		t.Skip("SOCKSERV_ECHO_SERVER is not set (cargo test --test packaging go sets it)")
	}
	cmd, addr := startChild(t, `^listening on (\S+)$`, exe, "-k", string(key), "tcp://127.0.0.1:0")
	c := mustDial(t, addr, keyed(key))
	for _, msg := range []string{"hello C", "", strings.Repeat("long ", 100000)} {
		if got := exchange(t, c, []byte(msg)); string(got) != msg {
			t.Fatalf("echo of %d bytes came back as %d", len(msg), len(got))
		}
	}
	if _, err := sockserv.Dial(addr, keyed([]byte("wrong"))); !errors.Is(err, sockserv.ErrAuthFailed) {
		t.Fatalf("wrong key against the C server: %v", err)
	}
	c.Close()
	// It stops cleanly on SIGTERM.
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("echo_server exit: %v", err)
	}
}

func python(t *testing.T) string {
	py := os.Getenv("SOCKSERV_PYTHON")
	if py == "" {
		t.Skip("SOCKSERV_PYTHON (a Python 3.12+, whose handshake is HMAC-SHA256) is not set")
	}
	return py
}

// Python's multiprocessing.connection.Client, with nothing but the
// standard library, against a Go server.
func TestPythonClientToGoServer(t *testing.T) {
	py := python(t)
	srv, addr := mustListen(t, "tcp://127.0.0.1:0", keyed(key))
	srv.Handle(func(c *sockserv.Conn) {
		for {
			frame, err := c.Recv()
			if err != nil {
				return
			}
			c.Send(append([]byte("go: "), frame...))
		}
	})
	srv.Start()
	port := addr[strings.LastIndex(addr, ":")+1:]
	script := `
import sys
from multiprocessing.connection import Client
c = Client(("127.0.0.1", int(sys.argv[1])), authkey=sys.argv[2].encode())
for msg in [b"one", b"", b"x" * 100000]:
    c.send_bytes(msg)
    assert c.recv_bytes() == b"go: " + msg
print("python client ok")
`
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "-c", script, port, string(key)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "python client ok") {
		t.Fatalf("python client: %v\n%s", err, out)
	}
	// A wrong authkey: Python raises AuthenticationError, the server counts it.
	out, err = exec.CommandContext(ctx, py, "-c", script, port, "wrong").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "AuthenticationError") {
		t.Fatalf("python client with a wrong key: %v\n%s", err, out)
	}
	eventually(t, "the failure to be counted", func() bool {
		st, _ := srv.Stats()
		return st.HandshakeFailures == 1 && st.Handled >= 1
	})
}

// A Go client against Python's multiprocessing.connection.Listener.
func TestGoClientToPythonListener(t *testing.T) {
	py := python(t)
	script := `
import sys
from multiprocessing.connection import Listener
with Listener(("127.0.0.1", 0), authkey=sys.argv[1].encode()) as l:
    print("listening on tcp://127.0.0.1:%d" % l.address[1], flush=True)
    with l.accept() as c:
        while True:
            try:
                msg = c.recv_bytes()
            except EOFError:
                break
            c.send_bytes(msg[::-1])
    print("python listener done", flush=True)
`
	cmd, addr := startChild(t, `^listening on (\S+)$`, py, "-c", script, string(key))
	c := mustDial(t, addr, keyed(key))
	for _, msg := range []string{"abc", "", "reversed by python"} {
		want := []rune(msg)
		for i, j := 0, len(want)-1; i < j; i, j = i+1, j-1 {
			want[i], want[j] = want[j], want[i]
		}
		if got := exchange(t, c, []byte(msg)); string(got) != string(want) {
			t.Fatalf("got %q for %q", got, msg)
		}
	}
	c.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("python listener: %v", err)
	}
}

func TestOptionsAndNonblocking(t *testing.T) {
	srv, addr := mustListen(t, "tcp://127.0.0.1:0", nil)
	srv.Handle(echo)
	srv.Start()
	c := mustDial(t, addr, nil)
	for _, o := range []struct {
		opt  sockserv.Option
		want int64
	}{{sockserv.OptKeepAlive, 1}, {sockserv.OptKeepAliveIdle, 30}, {sockserv.OptLinger, 2}, {sockserv.OptNoDelay, 0}} {
		if err := c.SetOption(o.opt, o.want); err != nil {
			t.Fatal(err)
		}
		if got, err := c.Option(o.opt); err != nil || got != o.want {
			t.Fatalf("option %d: %d %v, want %d", o.opt, got, err, o.want)
		}
	}
	if err := c.SetOption(99, 1); !errors.Is(err, sockserv.ErrInvalidArgument) {
		t.Fatalf("unknown option: %v", err)
	}
	// Non-blocking: nothing to receive says so at once.
	c.SetOption(sockserv.OptNonblocking, 1)
	start := time.Now()
	if _, err := c.Recv(); !errors.Is(err, sockserv.ErrWouldBlock) {
		t.Fatalf("non-blocking recv: %v", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("the non-blocking recv waited")
	}
	if err := c.Send([]byte("nb")); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	// Wait for the echo with Poll, then take it.
	if ready, err := c.Poll(wait); err != nil || !ready {
		t.Fatalf("poll: %v %v", ready, err)
	}
	got, err := c.Recv()
	for i := 0; i < 100 && errors.Is(err, sockserv.ErrWouldBlock); i++ {
		time.Sleep(10 * time.Millisecond) // the frame's rest is on its way
		got, err = c.Recv()
	}
	if err != nil || string(got) != "nb" {
		t.Fatalf("got %q %v", got, err)
	}
}

// Close with live connections: a blocked handler gets ErrShutdown, an
// event-mode connection's OnClose too, and Close returns.
func TestCloseWithLiveConnections(t *testing.T) {
	threaded, addr := mustListen(t, "tcp://127.0.0.1:0", nil)
	handlerErr := make(chan error, 1)
	threaded.Handle(func(c *sockserv.Conn) {
		c.Send([]byte("ready"))
		_, err := c.Recv()
		handlerErr <- err
	})
	threaded.Start()
	c := mustDial(t, addr, nil)
	if _, err := c.Recv(); err != nil {
		t.Fatal(err)
	}

	evented, evAddr := mustListen(t, "tcp://127.0.0.1:0", nil)
	closeErr := make(chan error, 1)
	evented.HandleEvents(sockserv.Events{
		OnOpen:  func(c *sockserv.Conn) { c.Send([]byte("ready")) },
		OnClose: func(_ *sockserv.Conn, err error) { closeErr <- err },
	})
	evented.Start()
	e := mustDial(t, evAddr, nil)
	if _, err := e.Recv(); err != nil {
		t.Fatal(err)
	}

	for _, srv := range []*sockserv.Server{threaded, evented} {
		done := make(chan struct{})
		go func() { srv.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(wait):
			t.Fatal("Close did not return")
		}
	}
	for what, ch := range map[string]chan error{"the handler": handlerErr, "OnClose": closeErr} {
		select {
		case err := <-ch:
			if !errors.Is(err, sockserv.ErrShutdown) {
				t.Fatalf("%s saw %v, want ErrShutdown", what, err)
			}
		default:
			t.Fatalf("%s did not finish before Close returned", what)
		}
	}
	// The clients see the connections end.
	if _, err := c.Recv(); err == nil {
		t.Fatal("threaded client still connected")
	}
	if _, err := e.Recv(); err == nil {
		t.Fatal("event client still connected")
	}
}

// Behind a load balancer: a PROXY v1 header names the client, and the
// socket is then adopted with NewConn; a malformed header is counted.
func TestProxyProtocolAndNewConn(t *testing.T) {
	cfg := keyed(key)
	cfg.ProxyProtocol = sockserv.ProxyRequired
	srv, addr := mustListen(t, "tcp://127.0.0.1:0", cfg)
	srv.Handle(func(c *sockserv.Conn) {
		peer, _ := c.PeerAddr()
		c.Send([]byte(peer))
	})
	srv.Start()
	hostPort := strings.TrimPrefix(addr, "tcp://")
	port := hostPort[strings.LastIndex(hostPort, ":")+1:]

	raw, err := net.DialTimeout("tcp", hostPort, wait)
	if err != nil {
		t.Fatal(err)
	}
	// 192.0.2.1 (TEST-NET-1) is only named, never sent to.
	fmt.Fprintf(raw, "PROXY TCP4 192.0.2.1 127.0.0.1 5555 %s\r\n", port)
	f, err := raw.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Dup(int(f.Fd()))
	f.Close()
	raw.Close()
	if err != nil {
		t.Fatal(err)
	}
	c, err := sockserv.NewConn(fd, keyed(key), sockserv.RoleClient)
	if err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := c.Recv(); err != nil || string(got) != "tcp://192.0.2.1:5555" {
		t.Fatalf("peer seen as %q: %v", got, err)
	}

	bad, err := net.DialTimeout("tcp", hostPort, wait)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	bad.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	bad.SetReadDeadline(time.Now().Add(wait))
	if n, err := bad.Read(make([]byte, 64)); err == nil {
		t.Fatalf("the server answered a malformed header with %d bytes", n)
	}
	eventually(t, "the PROXY failure to be counted", func() bool {
		st, _ := srv.Stats()
		return st.ProxyFailures == 1
	})
	if _, err := sockserv.NewConn(-1, nil, sockserv.RoleClient); !errors.Is(err, sockserv.ErrInvalidArgument) {
		t.Fatalf("NewConn(-1): %v", err)
	}
}
