package sockserv

// The C callbacks of a Server: exported Go functions that sockserv calls
// on its own threads (cgo gives each a Go context). userdata points at C
// memory holding the cgo.Handle of the server's state. No panic may cross
// into C: each recovers.

/*
#include <stdint.h>
#include "sockserv.h"
*/
import "C"

import (
	"fmt"
	"os"
	"runtime/cgo"
	"unsafe"
)

func stateOf(userdata unsafe.Pointer) *serverState {
	return cgo.Handle(*(*C.uintptr_t)(userdata)).Value().(*serverState)
}

//export sockservGoHandler
func sockservGoHandler(userdata unsafe.Pointer, conn *C.sockserv_conn) {
	st := stateOf(userdata)
	c := &Conn{c: conn}
	defer func() {
		if v := recover(); v != nil {
			st.recovered("connection handler", v)
		}
		c.forget() // the server closes and frees it now
	}()
	if st.handler != nil {
		st.handler(c)
	}
}

//export sockservGoVerify
func sockservGoVerify(userdata unsafe.Pointer, peer *C.char) (ok C.bool) {
	st := stateOf(userdata)
	defer func() {
		if v := recover(); v != nil {
			st.recovered("verify func", v)
			ok = false // refuse the peer we could not judge
		}
	}()
	return C.bool(st.verify == nil || st.verify(C.GoString(peer)))
}

//export sockservGoOpen
func sockservGoOpen(userdata unsafe.Pointer, conn *C.sockserv_conn) {
	st := stateOf(userdata)
	c := &Conn{c: conn}
	st.conns.Store(uintptr(unsafe.Pointer(conn)), c)
	defer func() {
		if v := recover(); v != nil {
			st.recovered("OnOpen callback", v)
			C.sockserv_conn_close(conn) // a connection its owner failed to set up
		}
	}()
	if st.events.OnOpen != nil {
		st.events.OnOpen(c)
	}
}

func connOf(st *serverState, conn *C.sockserv_conn) *Conn {
	if c, ok := st.conns.Load(uintptr(unsafe.Pointer(conn))); ok {
		return c.(*Conn)
	}
	return &Conn{c: conn}
}

//export sockservGoFrame
func sockservGoFrame(userdata unsafe.Pointer, conn *C.sockserv_conn, data *C.uint8_t, n C.size_t) {
	st := stateOf(userdata)
	defer func() {
		if v := recover(); v != nil {
			st.recovered("OnFrame callback", v)
			C.sockserv_conn_close(conn) // its state is unknown now
		}
	}()
	if st.events.OnFrame == nil {
		return
	}
	frame := make([]byte, int(n))
	if n > 0 {
		copy(frame, unsafe.Slice((*byte)(unsafe.Pointer(data)), int(n)))
	}
	st.events.OnFrame(connOf(st, conn), frame)
}

//export sockservGoClose
func sockservGoClose(userdata unsafe.Pointer, conn *C.sockserv_conn, reason C.enum_sockserv_result) {
	st := stateOf(userdata)
	c := connOf(st, conn)
	defer func() {
		if v := recover(); v != nil {
			st.recovered("OnClose callback", v)
		}
		st.conns.Delete(uintptr(unsafe.Pointer(conn)))
		c.forget() // freed once we return
	}()
	if st.events.OnClose == nil {
		return
	}
	var err error
	if reason != C.SOCKSERV_OK {
		// The detail of why is on this thread during the call.
		err = &Error{Op: "on_close", Code: Code(reason), Detail: lastError()}
	}
	st.events.OnClose(c, err)
}

//export sockservGoDatagram
func sockservGoDatagram(userdata unsafe.Pointer, sock *C.sockserv_dgram, data *C.uint8_t, n C.size_t, from *C.char) {
	st := cgo.Handle(*(*C.uintptr_t)(userdata)).Value().(*datagramState)
	defer func() {
		if v := recover(); v != nil {
			if st.onPanic != nil {
				st.onPanic("datagram handler", v)
			} else {
				fmt.Fprintf(os.Stderr, "sockserv: the datagram handler panicked: %v\n", v)
			}
		}
	}()
	if st.handler == nil {
		return
	}
	payload := make([]byte, int(n))
	if n > 0 {
		copy(payload, unsafe.Slice((*byte)(unsafe.Pointer(data)), int(n)))
	}
	st.handler(st.sock, payload, C.GoString(from))
}
