package sockserv

/*
#include <stdint.h>
#include <stdlib.h>
#include "sockserv.h"

// The Go trampolines (callbacks.go), as cgo exports them.
extern void sockservGoHandler(void *userdata, sockserv_conn *conn);
extern _Bool sockservGoVerify(void *userdata, char *peer);
extern void sockservGoOpen(void *userdata, sockserv_conn *conn);
extern void sockservGoFrame(void *userdata, sockserv_conn *conn, uint8_t *data, size_t len);
extern void sockservGoClose(void *userdata, sockserv_conn *conn, sockserv_result reason);
*/
import "C"

import (
	"fmt"
	"os"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// Events are the callbacks of an event-driven server. Each runs on the
// connection's I/O thread, which serves nothing else meanwhile: do not
// block (hand long work to a goroutine, which may Send on the Conn until
// OnClose returns). Any may be nil.
type Events struct {
	// OnOpen: a connection passed the handshake.
	OnOpen func(c *Conn)
	// OnFrame: one whole frame (a copy, yours to keep).
	OnFrame func(c *Conn, frame []byte)
	// OnClose: the connection ended, once for every OnOpen; err is nil
	// after Close, else why (errors.Is(err, ErrClosed) when the peer left,
	// ErrShutdown when the server closed, ErrTimedOut for the idle timeout).
	// The *Conn is the same one OnOpen and OnFrame saw.
	OnClose func(c *Conn, err error)
}

// Stats are the server's counters (sockserv_server_stat).
type Stats struct {
	Accepted, Active, RefusedByVerify, RefusedWhenFull uint64
	HandshakeFailures, Handled, ProxyFailures          uint64
}

// serverState is what the trampolines reach through the C userdata.
type serverState struct {
	handler func(*Conn)
	verify  func(string) bool
	events  Events
	onPanic func(where string, value interface{})

	// Event mode: the *Conn of each live connection, by C handle.
	conns sync.Map // uintptr -> *Conn
}

func (st *serverState) recovered(where string, v interface{}) {
	if st.onPanic != nil {
		st.onPanic(where, v)
		return
	}
	fmt.Fprintf(os.Stderr, "sockserv: the %s panicked: %v\n", where, v)
}

// Server is a listening server (sockserv_server_*). Set its handler before
// Start or Serve; Close stops it, closes its connections and joins its
// threads.
type Server struct {
	srv    *C.sockserv_server
	state  *serverState
	handle cgo.Handle
	cell   unsafe.Pointer // C memory holding handle: the C userdata
	once   sync.Once
}

// Listen binds addr ("tcp://127.0.0.1:0" picks a free port, "tcp://[::1]:0",
// "unix:///run/app.sock") and listens.
func Listen(addr string, cfg *Config) (*Server, error) {
	var raw *C.sockserv_server
	err := withConfig(cfg, func(c *C.sockserv_config) error {
		caddr := C.CString(addr)
		defer C.free(unsafe.Pointer(caddr))
		return call("sockserv_server_new", func() C.enum_sockserv_result { return C.sockserv_server_new(caddr, c, &raw) })
	})
	if err != nil {
		return nil, err
	}
	st := &serverState{}
	s := &Server{srv: raw, state: st, handle: cgo.NewHandle(st)}
	// A uintptr in C memory: C keeps no Go pointer, and the trampolines
	// turn it back into the state.
	s.cell = C.malloc(C.size_t(unsafe.Sizeof(C.uintptr_t(0))))
	*(*C.uintptr_t)(s.cell) = C.uintptr_t(s.handle)
	return s, nil
}

// Handle makes the server threaded: h runs on a thread of its own for
// each authenticated connection, concurrently with the others, and may
// block; the connection closes when it returns. Before Start or Serve only
// (else ErrInvalidState).
func (s *Server) Handle(h func(c *Conn)) error {
	// The C call refuses once the server runs; only then does no
	// trampoline read the state, so the state changes after it.
	err := call("sockserv_server_set_handler", func() C.enum_sockserv_result {
		return C.sockserv_server_set_handler(s.srv, C.sockserv_handler_fn(C.sockservGoHandler), s.cell)
	})
	if err == nil {
		s.state.handler = h
	}
	return err
}

// HandleEvents makes the server event-driven: a few I/O threads hold
// every connection and run the callbacks. Before Start or Serve only.
func (s *Server) HandleEvents(ev Events) error {
	err := call("sockserv_server_set_event_handlers", func() C.enum_sockserv_result {
		// All three always: the open and close trampolines keep the
		// *Conn for each connection.
		return C.sockserv_server_set_event_handlers(s.srv, C.sockserv_open_fn(C.sockservGoOpen),
			C.sockserv_frame_fn(C.sockservGoFrame), C.sockserv_close_fn(C.sockservGoClose), s.cell)
	})
	if err == nil {
		s.state.events = ev
	}
	return err
}

// Verify sets a func that accepts (true) or refuses each peer by address,
// before the handshake, on the accept thread: keep it quick. A panic
// refuses the peer. Before Start or Serve only.
func (s *Server) Verify(f func(peerAddr string) bool) error {
	err := call("sockserv_server_set_verify", func() C.enum_sockserv_result {
		return C.sockserv_server_set_verify(s.srv, C.sockserv_verify_fn(C.sockservGoVerify), s.cell)
	})
	if err == nil {
		s.state.verify = f
	}
	return err
}

// OnPanic receives the value of every panic a callback raised (they are
// recovered at the C boundary; by default printed to stderr). A panicking
// handler's connection closes; in event mode, a panic in OnOpen or OnFrame
// closes that connection. Set it before Start or Serve.
func (s *Server) OnPanic(f func(where string, value interface{})) { s.state.onPanic = f }

// Addr is the bound address, e.g. "tcp://127.0.0.1:40123".
func (s *Server) Addr() (string, error) {
	return address("sockserv_server_local_addr", func(buf *C.char, n C.size_t, needed *C.size_t) C.enum_sockserv_result {
		return C.sockserv_server_local_addr(s.srv, buf, n, needed)
	})
}

// Start serves on background threads and returns at once.
func (s *Server) Start() error {
	return call("sockserv_server_start", func() C.enum_sockserv_result { return C.sockserv_server_start(s.srv) })
}

// Serve serves on the calling goroutine's thread until Shutdown.
func (s *Server) Serve() error {
	return call("sockserv_server_serve", func() C.enum_sockserv_result { return C.sockserv_server_serve(s.srv) })
}

// Shutdown stops accepting, from any goroutine (a handler too), and
// returns at once; live connections go on until Close.
func (s *Server) Shutdown() error {
	return call("sockserv_server_shutdown", func() C.enum_sockserv_result { return C.sockserv_server_shutdown(s.srv) })
}

// Stats reads every counter.
func (s *Server) Stats() (Stats, error) {
	var st Stats
	all := []struct {
		which C.int
		into  *uint64
	}{
		{C.SOCKSERV_STAT_ACCEPTED, &st.Accepted},
		{C.SOCKSERV_STAT_ACTIVE, &st.Active},
		{C.SOCKSERV_STAT_REFUSED_BY_VERIFY, &st.RefusedByVerify},
		{C.SOCKSERV_STAT_REFUSED_WHEN_FULL, &st.RefusedWhenFull},
		{C.SOCKSERV_STAT_HANDSHAKE_FAILURES, &st.HandshakeFailures},
		{C.SOCKSERV_STAT_HANDLED, &st.Handled},
		{C.SOCKSERV_STAT_PROXY_FAILURES, &st.ProxyFailures},
	}
	for _, a := range all {
		var v C.uint64_t
		if err := call("sockserv_server_stat", func() C.enum_sockserv_result {
			return C.sockserv_server_stat(s.srv, a.which, &v)
		}); err != nil {
			return Stats{}, err
		}
		*a.into = uint64(v)
	}
	return st, nil
}

// Close stops the server and frees it: it closes every live connection
// (a blocked handler gets ErrShutdown), waits for every handler and
// callback to return and joins every thread. Never from a callback (it
// would wait for itself). Closing twice does nothing.
func (s *Server) Close() error {
	s.once.Do(func() {
		C.sockserv_server_free(s.srv)
		s.srv = nil
		// No callback runs any more: the state may go.
		s.handle.Delete()
		C.free(s.cell)
		s.cell = nil
	})
	return nil
}
