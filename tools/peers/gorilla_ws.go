// gorilla_ws: the gorilla/websocket peer in tools/ws_compare.sh, written the way gorilla's own
// examples write a server: net/http serves the upgrade, then a goroutine per connection reads
// whole messages (ReadMessage) and echoes each with its type. On /chat every text message
// goes to every client on /chat (the sender too) as gorilla's chat example does it, with one
// PreparedMessage per message (framed once) sent through each client's buffered channel to
// its writer goroutine; a client whose channel is full is closed, as the example closes it.
// Default buffer sizes, no compression (gorilla's defaults); Go sets TCP_NODELAY.
//
// --threads sets GOMAXPROCS.
//
//	tools/peers/build.sh OUT && OUT/gorilla_ws --port=0 --threads=1
//
// Prints "listening on 127.0.0.1:PORT" once it listens; runs until killed.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"syscall"

	"github.com/gorilla/websocket"
)

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

type client struct {
	conn *websocket.Conn
	send chan *websocket.PreparedMessage
}

type hub struct {
	mutex   sync.Mutex
	clients map[*client]struct{}
}

func (h *hub) broadcast(message *websocket.PreparedMessage) {
	h.mutex.Lock()
	defer h.mutex.Unlock()
	for c := range h.clients {
		select {
		case c.send <- message:
		default:
			delete(h.clients, c)
			close(c.send)
		}
	}
}

func (h *hub) leave(c *client) {
	h.mutex.Lock()
	defer h.mutex.Unlock()
	if _, ok := h.clients[c]; ok {
		delete(h.clients, c)
		close(c.send)
	}
}

var chat = hub{clients: map[*client]struct{}{}}

func serveChat(conn *websocket.Conn) {
	c := &client{conn: conn, send: make(chan *websocket.PreparedMessage, 256)}
	chat.mutex.Lock()
	chat.clients[c] = struct{}{}
	chat.mutex.Unlock()
	go func() {
		defer conn.Close()
		for message := range c.send {
			if err := conn.WritePreparedMessage(message); err != nil {
				return
			}
		}
	}()
	defer chat.leave(c)
	for {
		kind, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if kind != websocket.TextMessage {
			return
		}
		prepared, err := websocket.NewPreparedMessage(websocket.TextMessage, data)
		if err != nil {
			return
		}
		chat.broadcast(prepared)
	}
}

func serveEcho(conn *websocket.Conn) {
	defer conn.Close()
	for {
		kind, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if err := conn.WriteMessage(kind, data); err != nil {
			return
		}
	}
}

func main() {
	port := flag.Int("port", 1836, "port on 127.0.0.1")
	threads := flag.Int("threads", 1, "GOMAXPROCS")
	flag.Parse()
	runtime.GOMAXPROCS(*threads)
	var limit syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit) == nil {
		limit.Cur = limit.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit)
	}
	listener, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on 127.0.0.1:%d\n", listener.Addr().(*net.TCPAddr).Port)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		conn.SetReadLimit(64 << 20)
		if r.URL.Path == "/chat" {
			serveChat(conn)
		} else {
			serveEcho(conn)
		}
	})
	fmt.Fprintln(os.Stderr, http.Serve(listener, handler))
	os.Exit(1)
}
