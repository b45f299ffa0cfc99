package sockserv

/*
#include <stdlib.h>
#include "sockserv.h"
*/
import "C"

import (
	"sync"
	"time"
	"unsafe"
)

// Conn is a framed connection: a client one from Dial (yours: Close it)
// or one a server lends to a handler or event callback (valid until the
// handler returns, or until OnClose returns in event mode).
//
// Send may be called from several goroutines at once (frames never
// interleave), and one goroutine may Recv while others Send. Close may be
// called from any goroutine: it wakes a blocked Send or Recv, which then
// return an error.
type Conn struct {
	c     *C.sockserv_conn
	owned bool

	// Calls hold mu for reading; Close takes it for writing before the
	// handle is freed, so no call uses a freed handle.
	mu     sync.RWMutex
	closed bool
	once   sync.Once
}

// Dial connects to addr ("tcp://127.0.0.1:9000", "tcp://[::1]:9000",
// "unix:///run/app.sock") and, when cfg has an AuthKey, authenticates.
func Dial(addr string, cfg *Config) (*Conn, error) {
	var raw *C.sockserv_conn
	err := withConfig(cfg, func(c *C.sockserv_config) error {
		caddr := C.CString(addr)
		defer C.free(unsafe.Pointer(caddr))
		return call("sockserv_connect", func() C.enum_sockserv_result { return C.sockserv_connect(caddr, c, &raw) })
	})
	if err != nil {
		return nil, err
	}
	return &Conn{c: raw, owned: true}, nil
}

// Role says which side of the handshake an adopted socket takes.
type Role int

// The roles (SOCKSERV_ROLE_*).
const (
	RoleServer Role = C.SOCKSERV_ROLE_SERVER // the socket was accepted: it challenges first
	RoleClient Role = C.SOCKSERV_ROLE_CLIENT // the socket was connected: it answers first
)

// NewConn adopts a connected stream socket (TCP or Unix) you already
// have, runs the handshake in role when cfg has a key, then frames over
// it. On success the Conn owns fd and closes it; on failure fd is still
// yours. (From a net.Conn: dup the descriptor of its File() and close
// both Go values.)
func NewConn(fd int, cfg *Config, role Role) (*Conn, error) {
	var raw *C.sockserv_conn
	err := withConfig(cfg, func(c *C.sockserv_config) error {
		return call("sockserv_conn_from_fd", func() C.enum_sockserv_result {
			return C.sockserv_conn_from_fd(C.int(fd), c, C.int(role), &raw)
		})
	})
	if err != nil {
		return nil, err
	}
	return &Conn{c: raw, owned: true}, nil
}

func (c *Conn) do(op string, f func(*C.sockserv_conn) C.enum_sockserv_result) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return &Error{Op: op, Code: ErrClosed, Detail: "the connection was closed by Close"}
	}
	return call(op, func() C.enum_sockserv_result { return f(c.c) })
}

// Send sends b as one frame. Event mode: it is queued, never blocks.
func (c *Conn) Send(b []byte) error {
	p, n := keyPtr(b)
	return c.do("sockserv_conn_send", func(raw *C.sockserv_conn) C.enum_sockserv_result {
		return C.sockserv_conn_send(raw, p, n)
	})
}

// Recv receives the next whole frame (a copy). ErrClosed means the peer
// closed between frames. Not for event-mode connections (frames go to
// OnFrame).
func (c *Conn) Recv() ([]byte, error) {
	var frame []byte
	err := c.do("sockserv_conn_recv", func(raw *C.sockserv_conn) C.enum_sockserv_result {
		var data *C.uint8_t
		var n C.size_t
		rc := C.sockserv_conn_recv(raw, &data, &n)
		if rc == C.SOCKSERV_OK {
			// Borrowed until the next receive: copy it out now.
			frame = make([]byte, int(n))
			copy(frame, unsafe.Slice((*byte)(unsafe.Pointer(data)), int(n)))
		}
		return rc
	})
	return frame, err
}

// Poll waits up to timeout (negative: for ever, 0: just look) for
// something to receive.
func (c *Conn) Poll(timeout time.Duration) (bool, error) {
	ms := C.int(-1)
	if timeout >= 0 {
		ms = C.int(timeout.Milliseconds())
		if timeout.Milliseconds() > 1<<31-1 {
			ms = -1
		}
	}
	var readable C.bool
	err := c.do("sockserv_conn_poll", func(raw *C.sockserv_conn) C.enum_sockserv_result {
		return C.sockserv_conn_poll(raw, ms, &readable)
	})
	return bool(readable), err
}

// SetTimeout bounds each later Send and Recv (0: wait for ever).
func (c *Conn) SetTimeout(d time.Duration) error {
	ms, err := millis(d, "timeout")
	if err != nil {
		return err
	}
	return c.do("sockserv_conn_set_timeout_ms", func(raw *C.sockserv_conn) C.enum_sockserv_result {
		return C.sockserv_conn_set_timeout_ms(raw, ms)
	})
}

// PeerAddr is the peer's address ("tcp://127.0.0.1:5000"; behind a PROXY
// header, the client's it names).
func (c *Conn) PeerAddr() (string, error) {
	return c.addr("sockserv_conn_peer_addr", func(raw *C.sockserv_conn, buf *C.char, n C.size_t, needed *C.size_t) C.enum_sockserv_result {
		return C.sockserv_conn_peer_addr(raw, buf, n, needed)
	})
}

// LocalAddr is this end's address.
func (c *Conn) LocalAddr() (string, error) {
	return c.addr("sockserv_conn_local_addr", func(raw *C.sockserv_conn, buf *C.char, n C.size_t, needed *C.size_t) C.enum_sockserv_result {
		return C.sockserv_conn_local_addr(raw, buf, n, needed)
	})
}

func (c *Conn) addr(op string, f func(*C.sockserv_conn, *C.char, C.size_t, *C.size_t) C.enum_sockserv_result) (string, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return "", &Error{Op: op, Code: ErrClosed, Detail: "the connection was closed by Close"}
	}
	return address(op, func(buf *C.char, n C.size_t, needed *C.size_t) C.enum_sockserv_result {
		return f(c.c, buf, n, needed)
	})
}

// Close closes the connection, waking any goroutine blocked on it. A
// client connection is then freed (waiting for the calls under way to
// return); a lent one is closed and the server frees it. Later calls
// return an error with ErrClosed. Closing twice does nothing.
func (c *Conn) Close() error {
	var err error
	c.once.Do(func() {
		// sockserv_conn_close is safe alongside other calls: it wakes them.
		c.mu.RLock()
		err = call("sockserv_conn_close", func() C.enum_sockserv_result { return C.sockserv_conn_close(c.c) })
		c.mu.RUnlock()
		if c.owned {
			c.mu.Lock()
			c.closed = true
			C.sockserv_conn_free(c.c)
			c.c = nil
			c.mu.Unlock()
			// Closing a client connection the peer already closed is fine.
			err = nil
		}
	})
	return err
}

// forget marks a lent connection as gone (its server freed it).
func (c *Conn) forget() {
	c.mu.Lock()
	c.closed = true
	c.c = nil
	c.mu.Unlock()
}

// Option is a connection option (SOCKSERV_OPT_*).
type Option int

// The connection options.
const (
	OptNoDelay           Option = C.SOCKSERV_OPT_NODELAY            // TCP_NODELAY, 0 or 1
	OptKeepAlive         Option = C.SOCKSERV_OPT_KEEPALIVE          // SO_KEEPALIVE, 0 or 1
	OptKeepAliveIdle     Option = C.SOCKSERV_OPT_KEEPALIVE_IDLE     // seconds before the first probe
	OptKeepAliveInterval Option = C.SOCKSERV_OPT_KEEPALIVE_INTERVAL // seconds between probes
	OptKeepAliveCount    Option = C.SOCKSERV_OPT_KEEPALIVE_COUNT    // unanswered probes before dropping
	OptRecvBuffer        Option = C.SOCKSERV_OPT_RCVBUF             // SO_RCVBUF in bytes
	OptSendBuffer        Option = C.SOCKSERV_OPT_SNDBUF             // SO_SNDBUF in bytes
	OptLinger            Option = C.SOCKSERV_OPT_LINGER             // SO_LINGER in seconds, -1: off
	// OptNonblocking 1: a Recv with no whole frame ready, or a Send the
	// kernel cannot take at all, returns ErrWouldBlock at once; a Send the
	// kernel took part of succeeds and Flush (or the next Send) writes the
	// rest. Blocking connections only.
	OptNonblocking Option = C.SOCKSERV_OPT_NONBLOCKING
)

// SetOption sets a connection option.
func (c *Conn) SetOption(o Option, value int64) error {
	return c.do("sockserv_conn_set_option", func(raw *C.sockserv_conn) C.enum_sockserv_result {
		return C.sockserv_conn_set_option(raw, C.int(o), C.int64_t(value))
	})
}

// Option reads a connection option.
func (c *Conn) Option(o Option) (int64, error) {
	var v C.int64_t
	err := c.do("sockserv_conn_get_option", func(raw *C.sockserv_conn) C.enum_sockserv_result {
		return C.sockserv_conn_get_option(raw, C.int(o), &v)
	})
	return int64(v), err
}

// Flush writes what earlier sends left: the rest of a frame in
// non-blocking mode (ErrWouldBlock while some is left), or replies held
// by coalesced sends.
func (c *Conn) Flush() error {
	return c.do("sockserv_conn_flush", func(raw *C.sockserv_conn) C.enum_sockserv_result {
		return C.sockserv_conn_flush(raw)
	})
}

// PeerCertSHA256 is the SHA-256 of the certificate the peer showed in the
// TLS handshake (in a handler, in OnOpen, on a client). ErrInvalidState
// without TLS or without a peer certificate.
func (c *Conn) PeerCertSHA256() ([32]byte, error) {
	var out [32]byte
	err := c.do("sockserv_conn_peer_cert_sha256", func(raw *C.sockserv_conn) C.enum_sockserv_result {
		return C.sockserv_conn_peer_cert_sha256(raw, (*C.uint8_t)(unsafe.Pointer(&out[0])))
	})
	return out, err
}

// PeerCertSubject is that certificate's subject, "CN=client,O=Example".
func (c *Conn) PeerCertSubject() (string, error) {
	var subject string
	err := c.do("sockserv_conn_peer_cert_subject", func(raw *C.sockserv_conn) C.enum_sockserv_result {
		var buf [1024]C.char
		var needed C.size_t
		rc := C.sockserv_conn_peer_cert_subject(raw, &buf[0], C.size_t(len(buf)), &needed)
		if rc == C.SOCKSERV_OK {
			subject = C.GoString(&buf[0])
		}
		return rc
	})
	return subject, err
}

// TLSInfo is the TLS version negotiated (TLSVersion13...) and the ALPN
// protocol ("" for none). ErrInvalidState without TLS.
func (c *Conn) TLSInfo() (version int, alpn string, err error) {
	err = c.do("sockserv_conn_tls_info", func(raw *C.sockserv_conn) C.enum_sockserv_result {
		var buf [256]C.char
		var needed C.size_t
		var v C.int
		rc := C.sockserv_conn_tls_info(raw, &v, &buf[0], C.size_t(len(buf)), &needed)
		if rc == C.SOCKSERV_OK {
			version, alpn = int(v), C.GoString(&buf[0])
		}
		return rc
	})
	return version, alpn, err
}
