package sockserv

/*
#include <stdint.h>
#include <stdlib.h>
#include "sockserv.h"

// The Go trampoline (callbacks.go), as cgo exports it.
extern void sockservGoDatagram(void *userdata, sockserv_dgram *sock, uint8_t *data, size_t len, char *from);
*/
import "C"

import (
	"runtime"
	"runtime/cgo"
	"sync"
	"time"
	"unsafe"
)

// DatagramStats are a datagram socket's counters (sockserv_dgram_stat).
type DatagramStats struct {
	Sent, Received, TooLarge                     uint64
	TooShort, BadVersion, BadTag, TooOld, TooNew uint64
	Replayed                                     uint64
}

// DatagramConn is a datagram socket (UDP or Unix datagram): one from
// ListenDatagram or DialDatagram (yours: Close it), or a datagram
// server's socket (lent: valid until the server is closed). With a key in
// the Config every datagram is sealed, and those that fail the checks are
// dropped and counted (docs/DATAGRAM.md). Sends may come from several
// goroutines at once; receive from one at a time.
type DatagramConn struct {
	d     *C.sockserv_dgram
	owned bool

	mu     sync.RWMutex // as Conn's: Close waits for calls under way
	closed bool
	once   sync.Once
}

// ListenDatagram opens a datagram socket bound to addr ("udp://127.0.0.1:0",
// "unixgram:///tmp/me.sock", "unixgram://@name"), or unbound with "" (the
// first SendTo binds it in the destination's family).
func ListenDatagram(addr string, cfg *Config) (*DatagramConn, error) {
	return openDatagram("sockserv_dgram_open", addr, cfg, func(a *C.char, c *C.sockserv_config, out **C.sockserv_dgram) C.enum_sockserv_result {
		return C.sockserv_dgram_open(a, c, out)
	})
}

// DialDatagram opens a datagram socket connected to addr: Send goes
// there, and only its datagrams are received.
func DialDatagram(addr string, cfg *Config) (*DatagramConn, error) {
	return openDatagram("sockserv_dgram_connect", addr, cfg, func(a *C.char, c *C.sockserv_config, out **C.sockserv_dgram) C.enum_sockserv_result {
		return C.sockserv_dgram_connect(a, c, out)
	})
}

func openDatagram(op, addr string, cfg *Config, f func(*C.char, *C.sockserv_config, **C.sockserv_dgram) C.enum_sockserv_result) (*DatagramConn, error) {
	var raw *C.sockserv_dgram
	err := withConfig(cfg, func(c *C.sockserv_config) error {
		var caddr *C.char // NULL: unbound
		if addr != "" {
			caddr = C.CString(addr)
			defer C.free(unsafe.Pointer(caddr))
		}
		return call(op, func() C.enum_sockserv_result { return f(caddr, c, &raw) })
	})
	if err != nil {
		return nil, err
	}
	return &DatagramConn{d: raw, owned: true}, nil
}

func (d *DatagramConn) do(op string, f func(*C.sockserv_dgram) C.enum_sockserv_result) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return &Error{Op: op, Code: ErrClosed, Detail: "the socket was closed by Close"}
	}
	return call(op, func() C.enum_sockserv_result { return f(d.d) })
}

// SendTo sends b as one datagram to addr (e.g. a sender's address).
func (d *DatagramConn) SendTo(addr string, b []byte) error {
	caddr := C.CString(addr)
	defer C.free(unsafe.Pointer(caddr))
	p, n := keyPtr(b)
	return d.do("sockserv_dgram_send_to", func(raw *C.sockserv_dgram) C.enum_sockserv_result {
		return C.sockserv_dgram_send_to(raw, caddr, p, n)
	})
}

// Send sends b as one datagram to the connected peer (DialDatagram).
func (d *DatagramConn) Send(b []byte) error {
	p, n := keyPtr(b)
	return d.do("sockserv_dgram_send", func(raw *C.sockserv_dgram) C.enum_sockserv_result {
		return C.sockserv_dgram_send(raw, p, n)
	})
}

// RecvFrom receives the next datagram and its sender's address, waiting
// up to the timeout (ErrTimedOut). Not on a server's socket.
func (d *DatagramConn) RecvFrom() ([]byte, string, error) {
	return d.recv(true)
}

// Recv receives the next datagram's payload (for connected sockets).
func (d *DatagramConn) Recv() ([]byte, error) {
	b, _, err := d.recv(false)
	return b, err
}

func (d *DatagramConn) recv(withFrom bool) ([]byte, string, error) {
	op := "sockserv_dgram_recv"
	if withFrom {
		op = "sockserv_dgram_recv_from"
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, "", &Error{Op: op, Code: ErrClosed, Detail: "the socket was closed by Close"}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, C.SOCKSERV_DEFAULT_DATAGRAM_SIZE)
	var from [C.SOCKSERV_ADDRSTRLEN]C.char
	for try := 0; ; try++ {
		var n, needed C.size_t
		p := (*C.uint8_t)(unsafe.Pointer(&buf[0]))
		var rc C.enum_sockserv_result
		if withFrom {
			rc = C.sockserv_dgram_recv_from(d.d, p, C.size_t(len(buf)), &n, &from[0], C.size_t(len(from)), &needed)
		} else {
			rc = C.sockserv_dgram_recv(d.d, p, C.size_t(len(buf)), &n)
		}
		switch {
		case rc == C.SOCKSERV_OK:
			addr := ""
			if withFrom {
				addr = C.GoString(&from[0])
			}
			return buf[:n], addr, nil
		case rc == C.SOCKSERV_ERR_INSUFFICIENT_SIZE && try == 0 && int(n) > len(buf):
			buf = make([]byte, int(n)) // it stays queued: again, with room
		default:
			return nil, "", &Error{Op: op, Code: Code(rc), Detail: lastError()}
		}
	}
}

// SetTimeout bounds each later send and receive (0: wait for ever). A
// server's socket never waits to send.
func (d *DatagramConn) SetTimeout(t time.Duration) error {
	ms, err := millis(t, "timeout")
	if err != nil {
		return err
	}
	return d.do("sockserv_dgram_set_timeout_ms", func(raw *C.sockserv_dgram) C.enum_sockserv_result {
		return C.sockserv_dgram_set_timeout_ms(raw, ms)
	})
}

// LocalAddr is the bound address ("udp://127.0.0.1:40000"); ErrInvalidState
// for an unbound socket that has not sent yet.
func (d *DatagramConn) LocalAddr() (string, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return "", &Error{Op: "sockserv_dgram_local_addr", Code: ErrClosed, Detail: "the socket was closed by Close"}
	}
	return address("sockserv_dgram_local_addr", func(buf *C.char, n C.size_t, needed *C.size_t) C.enum_sockserv_result {
		return C.sockserv_dgram_local_addr(d.d, buf, n, needed)
	})
}

// Stats reads every counter.
func (d *DatagramConn) Stats() (DatagramStats, error) {
	var st DatagramStats
	all := []struct {
		which C.int
		into  *uint64
	}{
		{C.SOCKSERV_DGRAM_STAT_SENT, &st.Sent},
		{C.SOCKSERV_DGRAM_STAT_RECEIVED, &st.Received},
		{C.SOCKSERV_DGRAM_STAT_TOO_LARGE, &st.TooLarge},
		{C.SOCKSERV_DGRAM_STAT_TOO_SHORT, &st.TooShort},
		{C.SOCKSERV_DGRAM_STAT_BAD_VERSION, &st.BadVersion},
		{C.SOCKSERV_DGRAM_STAT_BAD_TAG, &st.BadTag},
		{C.SOCKSERV_DGRAM_STAT_TOO_OLD, &st.TooOld},
		{C.SOCKSERV_DGRAM_STAT_TOO_NEW, &st.TooNew},
		{C.SOCKSERV_DGRAM_STAT_REPLAYED, &st.Replayed},
	}
	for _, a := range all {
		var v C.uint64_t
		if err := d.do("sockserv_dgram_stat", func(raw *C.sockserv_dgram) C.enum_sockserv_result {
			return C.sockserv_dgram_stat(raw, a.which, &v)
		}); err != nil {
			return DatagramStats{}, err
		}
		*a.into = uint64(v)
	}
	return st, nil
}

// Close frees a socket from ListenDatagram or DialDatagram (removing a
// Unix socket file it bound), once the calls under way have returned: a
// receive without a timeout holds it up. A server's socket goes with its
// server; Close on it only stops this value's use. Twice does nothing.
func (d *DatagramConn) Close() error {
	d.once.Do(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.closed = true
		if d.owned {
			C.sockserv_dgram_free(d.d)
		}
		d.d = nil
	})
	return nil
}

type datagramState struct {
	handler func(sock *DatagramConn, data []byte, from string)
	onPanic func(where string, value interface{})
	sock    *DatagramConn
}

// DatagramServer receives on a bound socket and runs a handler for each
// datagram, on one thread of its own, like Python's UDPServer.
type DatagramServer struct {
	srv    *C.sockserv_dgram_server
	state  *datagramState
	handle cgo.Handle
	cell   unsafe.Pointer
	once   sync.Once
}

// ListenDatagramServer binds addr ("udp://127.0.0.1:0", "unixgram:///path").
func ListenDatagramServer(addr string, cfg *Config) (*DatagramServer, error) {
	var raw *C.sockserv_dgram_server
	err := withConfig(cfg, func(c *C.sockserv_config) error {
		caddr := C.CString(addr)
		defer C.free(unsafe.Pointer(caddr))
		return call("sockserv_dgram_server_new", func() C.enum_sockserv_result {
			return C.sockserv_dgram_server_new(caddr, c, &raw)
		})
	})
	if err != nil {
		return nil, err
	}
	var sock *C.sockserv_dgram
	if err := call("sockserv_dgram_server_socket", func() C.enum_sockserv_result {
		return C.sockserv_dgram_server_socket(raw, &sock)
	}); err != nil {
		C.sockserv_dgram_server_free(raw)
		return nil, err
	}
	st := &datagramState{sock: &DatagramConn{d: sock}}
	s := &DatagramServer{srv: raw, state: st, handle: cgo.NewHandle(st)}
	s.cell = C.malloc(C.size_t(unsafe.Sizeof(C.uintptr_t(0))))
	*(*C.uintptr_t)(s.cell) = C.uintptr_t(s.handle)
	return s, nil
}

// Handle sets the func run for each datagram: sock is the server's socket
// (reply with sock.SendTo(from, ...); such sends never wait), data a copy.
// The server receives nothing else meanwhile. Before Start or Serve only.
func (s *DatagramServer) Handle(h func(sock *DatagramConn, data []byte, from string)) error {
	err := call("sockserv_dgram_server_set_handler", func() C.enum_sockserv_result {
		return C.sockserv_dgram_server_set_handler(s.srv, C.sockserv_dgram_handler_fn(C.sockservGoDatagram), s.cell)
	})
	if err == nil {
		s.state.handler = h
	}
	return err
}

// OnPanic receives the value of every panic the handler raised (recovered
// at the C boundary; by default printed to stderr). Before Start or Serve.
func (s *DatagramServer) OnPanic(f func(where string, value interface{})) { s.state.onPanic = f }

// Socket is the server's socket: to send from other goroutines, and for
// its counters. Valid until Close.
func (s *DatagramServer) Socket() *DatagramConn { return s.state.sock }

// Addr is the bound address.
func (s *DatagramServer) Addr() (string, error) {
	return address("sockserv_dgram_server_local_addr", func(buf *C.char, n C.size_t, needed *C.size_t) C.enum_sockserv_result {
		return C.sockserv_dgram_server_local_addr(s.srv, buf, n, needed)
	})
}

// Start serves on a background thread and returns at once.
func (s *DatagramServer) Start() error {
	return call("sockserv_dgram_server_start", func() C.enum_sockserv_result { return C.sockserv_dgram_server_start(s.srv) })
}

// Serve serves on the calling goroutine's thread until Shutdown.
func (s *DatagramServer) Serve() error {
	return call("sockserv_dgram_server_serve", func() C.enum_sockserv_result { return C.sockserv_dgram_server_serve(s.srv) })
}

// Shutdown stops serving, from any goroutine (the handler too).
func (s *DatagramServer) Shutdown() error {
	return call("sockserv_dgram_server_shutdown", func() C.enum_sockserv_result {
		return C.sockserv_dgram_server_shutdown(s.srv)
	})
}

// Stats reads the counters of its socket.
func (s *DatagramServer) Stats() (DatagramStats, error) { return s.state.sock.Stats() }

// Close stops the server, joins its thread and frees it with its socket
// (removing its Unix socket file). Never from the handler.
func (s *DatagramServer) Close() error {
	s.once.Do(func() {
		s.state.sock.Close() // waits for calls on it from other goroutines
		C.sockserv_dgram_server_free(s.srv)
		s.srv = nil
		s.handle.Delete()
		C.free(s.cell)
		s.cell = nil
	})
	return nil
}
