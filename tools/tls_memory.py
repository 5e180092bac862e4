"""What a TLS connection costs a gev server's memory: established and idle, or half-open.

    tools/tls_memory.py --port=8443 --pid=$(pgrep tls_echo_server) --ca=cert.pem
        [--connections=2000] [--mode=idle|halfopen]          (one line)

idle: each connection completes its handshake, echoes one byte and stays open. halfopen: each
sends the first bytes of a ClientHello (a record header that promises 512 bytes, and one) and
nothing more, as a flood of abandoned handshakes does; run the server with a handshake timeout
longer than the measurement. Prints the growth of the server's VmRSS per connection, after 100
connections (opened and closed) have made OpenSSL set up what it sets up once; few, so that
little freed memory is there to be reused by the measured ones. Loopback only. Raise the descriptor limit (ulimit -n) for more than about 1,000 connections.
"""

import argparse
import socket
import ssl
import time


def rss(pid):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS for pid %d" % pid)


def open_connections(port, count, mode, context):
    sockets = []
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        if mode == "idle":
            sock = context.wrap_socket(raw, server_hostname="localhost")
            sock.sendall(b"x")
            sock.recv(1)
        else:
            raw.sendall(b"\x16\x03\x01\x02\x00\x01")
            sock = raw
        sockets.append(sock)
    return sockets


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--ca", required=True, help="the server's certificate or its CA (PEM)")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--mode", choices=("idle", "halfopen"), default="idle")
    args = parser.parse_args()
    context = ssl.create_default_context(cafile=args.ca)
    for sock in open_connections(args.port, 100, args.mode, context):
        sock.close()
    time.sleep(1.0)
    before = rss(args.pid)
    held = open_connections(args.port, args.connections, args.mode, context)
    time.sleep(1.0)
    after = rss(args.pid)
    print("%s: %d connections, %.0f bytes of server RSS each"
          % (args.mode, len(held), (after - before) / len(held)))


if __name__ == "__main__":
    main()
