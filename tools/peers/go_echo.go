// go_echo: the Go peer in tools/echo_compare.sh. Go's idiomatic echo on the standard library
// only: a goroutine per connection reads into its own 64 KiB buffer (as the other servers read)
// and writes what it read back. Go sets TCP_NODELAY by default, as gev does. --threads sets
// GOMAXPROCS: the runtime's netpoller then spreads goroutines over that many threads.
//
//	tools/peers/build.sh OUT && OUT/go_echo --port=0 --threads=1
//
// Prints "listening on 127.0.0.1:PORT" once it listens; runs until killed.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
)

func serve(conn net.Conn) {
	defer conn.Close()
	buffer := make([]byte, 64*1024)
	for {
		n, err := conn.Read(buffer)
		if n > 0 {
			if _, werr := conn.Write(buffer[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func main() {
	port := flag.Int("port", 1834, "TCP port (0: any free port)")
	threads := flag.Int("threads", 1, "GOMAXPROCS")
	flag.Parse()
	runtime.GOMAXPROCS(*threads)
	var limit syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit) == nil {
		limit.Cur = limit.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit)
	}
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", listener.Addr())
	for {
		conn, err := listener.Accept()
		if err != nil {
			continue
		}
		go serve(conn)
	}
}
