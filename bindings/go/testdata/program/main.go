// A program in a module of its own that uses the package, as a user
// would: tests/packaging/go.rs builds it with a go.mod whose replace line
// points at bindings/go, and runs it. (testdata: not part of ./...)
package main

import (
	"fmt"
	"os"
	"time"

	"sockserv"
)

func main() {
	cfg := &sockserv.Config{AuthKey: []byte("user key"), IOTimeout: 10 * time.Second}
	srv, err := sockserv.Listen("tcp://127.0.0.1:0", cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer srv.Close()
	srv.Handle(func(c *sockserv.Conn) {
		if frame, err := c.Recv(); err == nil {
			c.Send(append(frame, " back"...))
		}
	})
	srv.Start()
	addr, _ := srv.Addr()
	c, err := sockserv.Dial(addr, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	c.Send([]byte("there and"))
	reply, err := c.Recv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("%s (sockserv %s)\n", reply, sockserv.Version())
}
