// Package sockserv binds the sockserv C library: framed messages over TCP
// and Unix sockets with HMAC-SHA256 challenge-response authentication, the
// same bytes as Python's multiprocessing.connection (Listener/Client).
//
// A Server runs a handler func per connection on a thread of its own
// (Handle) or event callbacks on a few I/O threads (HandleEvents); Dial
// gives a client Conn. ListenDatagram, DialDatagram and
// ListenDatagramServer do the same for UDP and Unix datagrams, sealed
// when a key is set. Failures are *Error values carrying the C result
// code and the library's detail text; errors.Is(err, sockserv.ErrAuthFailed)
// tests the code. Everything that holds a C handle has a Close method.
//
// Build against the library with cgo: the header comes from the
// repository's include/ directory, the library from CGO_LDFLAGS, e.g.
//
//	CGO_LDFLAGS="-L$PWD/target/release -Wl,-rpath,$PWD/target/release" go test ./...
package sockserv

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -lsockserv
#include <stdlib.h>
#include "sockserv.h"
*/
import "C"

import (
	"fmt"
	"math"
	"runtime"
	"time"
	"unsafe"
)

// Code is a sockserv_result: the code of a failure. A Code is also an
// error, so errors.Is(err, sockserv.ErrClosed) matches an *Error by code.
type Code int

// The result codes of sockserv.h (SOCKSERV_ERR_*).
const (
	ErrNullParameter     Code = C.SOCKSERV_ERR_NULL_PARAMETER
	ErrInvalidArgument   Code = C.SOCKSERV_ERR_INVALID_ARGUMENT
	ErrInvalidAddress    Code = C.SOCKSERV_ERR_INVALID_ADDRESS
	ErrAddressInUse      Code = C.SOCKSERV_ERR_ADDRESS_IN_USE
	ErrConnectionRefused Code = C.SOCKSERV_ERR_CONNECTION_REFUSED
	ErrTimedOut          Code = C.SOCKSERV_ERR_TIMED_OUT
	ErrClosed            Code = C.SOCKSERV_ERR_CLOSED
	ErrTruncatedFrame    Code = C.SOCKSERV_ERR_TRUNCATED_FRAME
	ErrFrameTooLarge     Code = C.SOCKSERV_ERR_FRAME_TOO_LARGE
	ErrProtocol          Code = C.SOCKSERV_ERR_PROTOCOL
	ErrAuthFailed        Code = C.SOCKSERV_ERR_AUTH_FAILED
	ErrAuthProtocol      Code = C.SOCKSERV_ERR_AUTH_PROTOCOL
	ErrInsufficientSize  Code = C.SOCKSERV_ERR_INSUFFICIENT_SIZE
	ErrShutdown          Code = C.SOCKSERV_ERR_SHUTDOWN
	ErrInvalidState      Code = C.SOCKSERV_ERR_INVALID_STATE
	ErrBroken            Code = C.SOCKSERV_ERR_BROKEN
	ErrIO                Code = C.SOCKSERV_ERR_IO
	ErrPanic             Code = C.SOCKSERV_ERR_PANIC
	ErrWouldBlock        Code = C.SOCKSERV_ERR_WOULD_BLOCK
	ErrDatagramTooLarge  Code = C.SOCKSERV_ERR_DATAGRAM_TOO_LARGE
	ErrTLS               Code = C.SOCKSERV_ERR_TLS
	ErrCertificate       Code = C.SOCKSERV_ERR_CERTIFICATE
)

// Error gives the library's static text for the code (sockserv_strerror).
func (c Code) Error() string { return C.GoString(C.sockserv_strerror(C.int(c))) }

// String is the same text as Error.
func (c Code) String() string { return c.Error() }

// Error is a failed call: which one, its code, and the detail the library
// gave on the failing thread (the address, the OS error, the sizes).
type Error struct {
	Op     string // the C function, e.g. "sockserv_connect"
	Code   Code
	Detail string // sockserv_last_error; may be empty
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return e.Op + ": " + e.Code.Error()
	}
	return e.Op + ": " + e.Code.Error() + " (" + e.Detail + ")"
}

// Unwrap gives the Code, for errors.Is.
func (e *Error) Unwrap() error { return e.Code }

// lastError reads this thread's detail: call it on the thread that failed.
func lastError() string {
	n := C.sockserv_last_error(nil, 0)
	if n == 0 {
		return ""
	}
	buf := make([]byte, n+1)
	C.sockserv_last_error((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	return string(buf[:n])
}

// call runs one C call and turns a failure into an *Error. The detail is
// per OS thread, so the goroutine stays on its thread from the call to
// the read of the detail.
func call(op string, f func() C.enum_sockserv_result) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if rc := f(); rc != C.SOCKSERV_OK {
		return &Error{Op: op, Code: Code(rc), Detail: lastError()}
	}
	return nil
}

// Version is the library's version, "MAJOR.MINOR.PATCH".
func Version() string { return C.GoString(C.sockserv_version()) }

// ProxyMode says whether a server's connections start with a PROXY
// protocol header from a load balancer.
type ProxyMode int

// The PROXY protocol modes (SOCKSERV_PROXY_*).
const (
	ProxyOff      ProxyMode = C.SOCKSERV_PROXY_OFF
	ProxyOptional ProxyMode = C.SOCKSERV_PROXY_OPTIONAL
	ProxyRequired ProxyMode = C.SOCKSERV_PROXY_REQUIRED
)

// TLSClientAuth says whether a TLS server asks for client certificates.
type TLSClientAuth int

// The client certificate modes (SOCKSERV_TLS_CLIENT_AUTH_*); both ask for a CA.
const (
	TLSClientAuthNone     TLSClientAuth = C.SOCKSERV_TLS_CLIENT_AUTH_NONE
	TLSClientAuthOptional TLSClientAuth = C.SOCKSERV_TLS_CLIENT_AUTH_OPTIONAL
	TLSClientAuthRequired TLSClientAuth = C.SOCKSERV_TLS_CLIENT_AUTH_REQUIRED
)

// The TLS versions (SOCKSERV_TLS_VERSION_*), for Config.TLSMinVersion and
// Conn.TLSInfo.
const (
	TLSVersion12 = C.SOCKSERV_TLS_VERSION_1_2
	TLSVersion13 = C.SOCKSERV_TLS_VERSION_1_3
)

// Config holds the settings of servers and clients; the zero value (and a
// nil *Config) means the library's defaults: no key, 64 MiB frames, 10 s
// handshake and connect timeouts, no I/O timeout.
type Config struct {
	// AuthKey turns the HMAC-SHA256 handshake on (nil: plain framing; an
	// empty non-nil key is refused). A client proves this key.
	AuthKey []byte
	// ExtraAuthKeys are more keys a server accepts (key rotation).
	ExtraAuthKeys [][]byte
	// MaxFrameSize is the largest frame accepted, in bytes (0: default).
	MaxFrameSize uint64
	// HandshakeTimeout, ConnectTimeout: 0 keeps the default (10 s).
	HandshakeTimeout time.Duration
	ConnectTimeout   time.Duration
	// IOTimeout bounds each send and receive (0: wait for ever).
	IOTimeout time.Duration
	// MaxConnections a server serves at once (0: default 1024).
	MaxConnections int
	// MaxPendingHandshakes a threaded server holds in their preamble at
	// once, without a thread each (0: default 16384).
	MaxPendingHandshakes int
	// IOThreads for event mode (0: one per core).
	IOThreads int
	// IdleTimeout closes event-mode connections that receive nothing for
	// this long (0: never).
	IdleTimeout time.Duration
	// ProxyProtocol for servers behind HAProxy and the like.
	ProxyProtocol ProxyMode
	// MaxDatagramSize is the largest datagram payload sent or received
	// (0: default 8192, at most 65507).
	MaxDatagramSize int
	// DatagramWindow: with a key, how far a datagram's timestamp may be
	// from the receiver's clock (0: default 30 s).
	DatagramWindow time.Duration
	// DatagramReplayCapacity: with a key, how many accepted datagrams a
	// socket remembers to refuse replays (0: default 65536).
	DatagramReplayCapacity int

	// TLS, for tls:// addresses (docs/tls.md); PEM everywhere.
	// TLSCertFile and TLSKeyFile: this side's certificate chain and key
	// (a tls:// server needs them); TLSCert and TLSKey the same from memory.
	TLSCertFile, TLSKeyFile string
	TLSCert, TLSKey         []byte
	// TLSCAFile or TLSCA: the CA the peer's certificate must chain to (a
	// client needs one: no system roots).
	TLSCAFile string
	TLSCA     []byte
	// TLSServerName is the name a client checks ("": the address's host).
	TLSServerName string
	// TLSClientAuth: whether a server asks for client certificates.
	TLSClientAuth TLSClientAuth
	// TLSALPN lists ALPN protocols, in order of preference.
	TLSALPN []string
	// TLSMinVersion: TLSVersion12 allows 1.2 (0: 1.3, the default).
	TLSMinVersion int
	// TLS turns TLS on for NewConn (tls:// addresses imply it).
	TLS bool
}

func millis(d time.Duration, what string) (C.uint32_t, error) {
	if d < 0 || d.Milliseconds() > math.MaxUint32 {
		return 0, &Error{Op: "sockserv.Config", Code: ErrInvalidArgument,
			Detail: fmt.Sprintf("%s %v is out of range", what, d)}
	}
	ms := d.Milliseconds()
	if d > 0 && ms == 0 {
		ms = 1 // a positive timeout never becomes "none"
	}
	return C.uint32_t(ms), nil
}

func keyPtr(key []byte) (*C.uint8_t, C.size_t) {
	if len(key) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(&key[0])), C.size_t(len(key))
}

// build makes the C config; the caller frees it once the server or
// connection (which copies it) is made.
func (cfg *Config) build() (*C.sockserv_config, error) {
	var raw *C.sockserv_config
	if err := call("sockserv_config_new", func() C.enum_sockserv_result { return C.sockserv_config_new(&raw) }); err != nil {
		return nil, err
	}
	if err := cfg.apply(raw); err != nil {
		C.sockserv_config_free(raw)
		return nil, err
	}
	return raw, nil
}

func (cfg *Config) apply(raw *C.sockserv_config) error {
	if cfg == nil {
		return nil
	}
	type step = configStep
	var steps []step
	if cfg.AuthKey != nil {
		p, n := keyPtr(cfg.AuthKey)
		steps = append(steps, step{"sockserv_config_set_auth_key", true, func() C.enum_sockserv_result {
			return C.sockserv_config_set_auth_key(raw, p, n)
		}})
	}
	for _, key := range cfg.ExtraAuthKeys {
		p, n := keyPtr(key)
		steps = append(steps, step{"sockserv_config_add_auth_key", true, func() C.enum_sockserv_result {
			return C.sockserv_config_add_auth_key(raw, p, n)
		}})
	}
	timeouts := []struct {
		op  string
		d   time.Duration
		set func(*C.sockserv_config, C.uint32_t) C.enum_sockserv_result
	}{
		{"sockserv_config_set_handshake_timeout_ms", cfg.HandshakeTimeout, func(c *C.sockserv_config, ms C.uint32_t) C.enum_sockserv_result {
			return C.sockserv_config_set_handshake_timeout_ms(c, ms)
		}},
		{"sockserv_config_set_connect_timeout_ms", cfg.ConnectTimeout, func(c *C.sockserv_config, ms C.uint32_t) C.enum_sockserv_result {
			return C.sockserv_config_set_connect_timeout_ms(c, ms)
		}},
		{"sockserv_config_set_io_timeout_ms", cfg.IOTimeout, func(c *C.sockserv_config, ms C.uint32_t) C.enum_sockserv_result {
			return C.sockserv_config_set_io_timeout_ms(c, ms)
		}},
		{"sockserv_config_set_idle_timeout_ms", cfg.IdleTimeout, func(c *C.sockserv_config, ms C.uint32_t) C.enum_sockserv_result {
			return C.sockserv_config_set_idle_timeout_ms(c, ms)
		}},
		{"sockserv_config_set_datagram_window_ms", cfg.DatagramWindow, func(c *C.sockserv_config, ms C.uint32_t) C.enum_sockserv_result {
			return C.sockserv_config_set_datagram_window_ms(c, ms)
		}},
	}
	for _, t := range timeouts {
		if t.d == 0 {
			continue
		}
		ms, err := millis(t.d, t.op)
		if err != nil {
			return err
		}
		set := t.set
		steps = append(steps, step{t.op, true, func() C.enum_sockserv_result { return set(raw, ms) }})
	}
	steps = append(steps,
		step{"sockserv_config_set_max_frame_size", cfg.MaxFrameSize != 0, func() C.enum_sockserv_result {
			return C.sockserv_config_set_max_frame_size(raw, C.uint64_t(cfg.MaxFrameSize))
		}},
		step{"sockserv_config_set_max_connections", cfg.MaxConnections != 0, func() C.enum_sockserv_result {
			if cfg.MaxConnections < 0 {
				return C.SOCKSERV_ERR_INVALID_ARGUMENT
			}
			return C.sockserv_config_set_max_connections(raw, C.size_t(cfg.MaxConnections))
		}},
		step{"sockserv_config_set_max_pending_handshakes", cfg.MaxPendingHandshakes != 0, func() C.enum_sockserv_result {
			if cfg.MaxPendingHandshakes < 0 {
				return C.SOCKSERV_ERR_INVALID_ARGUMENT
			}
			return C.sockserv_config_set_max_pending_handshakes(raw, C.size_t(cfg.MaxPendingHandshakes))
		}},
		step{"sockserv_config_set_io_threads", cfg.IOThreads != 0, func() C.enum_sockserv_result {
			if cfg.IOThreads < 0 {
				return C.SOCKSERV_ERR_INVALID_ARGUMENT
			}
			return C.sockserv_config_set_io_threads(raw, C.size_t(cfg.IOThreads))
		}},
		step{"sockserv_config_set_max_datagram_size", cfg.MaxDatagramSize != 0, func() C.enum_sockserv_result {
			if cfg.MaxDatagramSize < 0 {
				return C.SOCKSERV_ERR_INVALID_ARGUMENT
			}
			return C.sockserv_config_set_max_datagram_size(raw, C.size_t(cfg.MaxDatagramSize))
		}},
		step{"sockserv_config_set_datagram_replay_capacity", cfg.DatagramReplayCapacity != 0, func() C.enum_sockserv_result {
			if cfg.DatagramReplayCapacity < 0 {
				return C.SOCKSERV_ERR_INVALID_ARGUMENT
			}
			return C.sockserv_config_set_datagram_replay_capacity(raw, C.size_t(cfg.DatagramReplayCapacity))
		}},
		step{"sockserv_config_set_proxy_protocol", cfg.ProxyProtocol != ProxyOff, func() C.enum_sockserv_result {
			return C.sockserv_config_set_proxy_protocol(raw, C.int(cfg.ProxyProtocol))
		}},
	)
	steps = append(steps, cfg.tlsSteps(raw)...)
	for _, s := range steps {
		if !s.set {
			continue
		}
		if err := call(s.op, s.f); err != nil {
			return err
		}
	}
	return nil
}

// cstring runs f with s as a C string, freed afterwards.
func cstring(s string, f func(*C.char) C.enum_sockserv_result) C.enum_sockserv_result {
	p := C.CString(s)
	defer C.free(unsafe.Pointer(p))
	return f(p)
}

// pem passes a PEM buffer (possibly empty) to C.
func pem(b []byte) (*C.char, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return (*C.char)(unsafe.Pointer(&b[0])), C.size_t(len(b))
}

// configStep is one C setter apply calls, when set.
type configStep struct {
	op  string
	set bool
	f   func() C.enum_sockserv_result
}

// tlsSteps are the TLS settings, certificates and CA before what needs them.
func (cfg *Config) tlsSteps(raw *C.sockserv_config) []configStep {
	steps := []configStep{
		{"sockserv_config_set_tls_cert_files", cfg.TLSCertFile != "" || cfg.TLSKeyFile != "", func() C.enum_sockserv_result {
			return cstring(cfg.TLSCertFile, func(chain *C.char) C.enum_sockserv_result {
				return cstring(cfg.TLSKeyFile, func(key *C.char) C.enum_sockserv_result {
					return C.sockserv_config_set_tls_cert_files(raw, chain, key)
				})
			})
		}},
		{"sockserv_config_set_tls_cert", cfg.TLSCert != nil || cfg.TLSKey != nil, func() C.enum_sockserv_result {
			chain, chainLen := pem(cfg.TLSCert)
			key, keyLen := pem(cfg.TLSKey)
			return C.sockserv_config_set_tls_cert(raw, chain, chainLen, key, keyLen)
		}},
		{"sockserv_config_set_tls_ca_file", cfg.TLSCAFile != "", func() C.enum_sockserv_result {
			return cstring(cfg.TLSCAFile, func(p *C.char) C.enum_sockserv_result {
				return C.sockserv_config_set_tls_ca_file(raw, p)
			})
		}},
		{"sockserv_config_set_tls_ca", cfg.TLSCA != nil, func() C.enum_sockserv_result {
			p, n := pem(cfg.TLSCA)
			return C.sockserv_config_set_tls_ca(raw, p, n)
		}},
		{"sockserv_config_set_tls_server_name", cfg.TLSServerName != "", func() C.enum_sockserv_result {
			return cstring(cfg.TLSServerName, func(p *C.char) C.enum_sockserv_result {
				return C.sockserv_config_set_tls_server_name(raw, p)
			})
		}},
		{"sockserv_config_set_tls_client_auth", cfg.TLSClientAuth != TLSClientAuthNone, func() C.enum_sockserv_result {
			return C.sockserv_config_set_tls_client_auth(raw, C.int(cfg.TLSClientAuth))
		}},
		{"sockserv_config_set_tls_min_version", cfg.TLSMinVersion != 0, func() C.enum_sockserv_result {
			return C.sockserv_config_set_tls_min_version(raw, C.int(cfg.TLSMinVersion))
		}},
		{"sockserv_config_set_tls", cfg.TLS, func() C.enum_sockserv_result {
			return C.sockserv_config_set_tls(raw, true)
		}},
	}
	for _, protocol := range cfg.TLSALPN {
		protocol := protocol
		steps = append(steps, configStep{"sockserv_config_add_tls_alpn", true, func() C.enum_sockserv_result {
			return cstring(protocol, func(p *C.char) C.enum_sockserv_result {
				return C.sockserv_config_add_tls_alpn(raw, p)
			})
		}})
	}
	return steps
}

// withConfig runs f with a C config made from cfg, freed afterwards.
func withConfig(cfg *Config, f func(*C.sockserv_config) error) error {
	raw, err := cfg.build()
	if err != nil {
		return err
	}
	defer C.sockserv_config_free(raw)
	return f(raw)
}

// address reads an address through one of the *_local_addr/_peer_addr calls.
func address(op string, f func(buf *C.char, n C.size_t, needed *C.size_t) C.enum_sockserv_result) (string, error) {
	var buf [C.SOCKSERV_ADDRSTRLEN]C.char
	var needed C.size_t
	err := call(op, func() C.enum_sockserv_result { return f(&buf[0], C.size_t(len(buf)), &needed) })
	if err != nil {
		return "", err
	}
	return C.GoString(&buf[0]), nil
}
