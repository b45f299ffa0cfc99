package sockserv_test

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"sockserv"
)

// An authenticated echo server in threaded mode and a client; a client
// with the wrong key is refused.
func Example() {
	cfg := &sockserv.Config{AuthKey: []byte("secret")}
	srv, err := sockserv.Listen("tcp://127.0.0.1:0", cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	srv.Handle(func(c *sockserv.Conn) {
		for {
			frame, err := c.Recv()
			if err != nil {
				return // errors.Is(err, sockserv.ErrClosed): the client left
			}
			c.Send(frame)
		}
	})
	srv.Start()
	addr, _ := srv.Addr()

	c, err := sockserv.Dial(addr, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.Send([]byte("hello"))
	reply, _ := c.Recv()
	fmt.Printf("%s\n", reply)

	_, err = sockserv.Dial(addr, &sockserv.Config{AuthKey: []byte("guess")})
	var se *sockserv.Error
	fmt.Println(errors.Is(err, sockserv.ErrAuthFailed), errors.As(err, &se) && se.Op == "sockserv_connect")
	// Output:
	// hello
	// true true
}

// Event mode: callbacks on I/O threads; Send only queues.
func ExampleServer_HandleEvents() {
	srv, _ := sockserv.Listen("tcp://127.0.0.1:0", nil)
	defer srv.Close()
	closed := make(chan error, 1)
	srv.HandleEvents(sockserv.Events{
		OnOpen:  func(c *sockserv.Conn) { c.Send([]byte("welcome")) },
		OnFrame: func(c *sockserv.Conn, frame []byte) { c.Send([]byte(strings.ToUpper(string(frame)))) },
		OnClose: func(c *sockserv.Conn, err error) { closed <- err },
	})
	srv.Start()
	addr, _ := srv.Addr()
	c, _ := sockserv.Dial(addr, nil)
	greeting, _ := c.Recv()
	c.Send([]byte("shout"))
	reply, _ := c.Recv()
	fmt.Printf("%s %s\n", greeting, reply)
	c.Close()
	fmt.Println(errors.Is(<-closed, sockserv.ErrClosed))
	// Output:
	// welcome SHOUT
	// true
}

// A sealed datagram echo over UDP.
func ExampleListenDatagramServer() {
	cfg := &sockserv.Config{AuthKey: []byte("secret")}
	srv, _ := sockserv.ListenDatagramServer("udp://127.0.0.1:0", cfg)
	defer srv.Close()
	srv.Handle(func(sock *sockserv.DatagramConn, data []byte, from string) {
		sock.SendTo(from, data)
	})
	srv.Start()
	addr, _ := srv.Addr()
	c, _ := sockserv.DialDatagram(addr, cfg)
	defer c.Close()
	c.SetTimeout(10 * time.Second)
	c.Send([]byte("ping"))
	reply, _ := c.Recv()
	fmt.Printf("%s\n", reply)
	// Output: ping
}
