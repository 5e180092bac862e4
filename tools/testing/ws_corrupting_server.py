"""A WebSocket server that is wrong on purpose, for tools_test.sh to show ws_bench catches it.

It accepts the upgrade correctly, then echoes each binary message with one bit of the fifth
message's middle byte flipped; with --drop, it echoes every message as it came except the
fifth of the first connection, which it never answers (the others go on). Prints "listening
on 127.0.0.1:PORT"; runs until killed.
"""
import base64
import hashlib
import socket
import sys
import threading

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frames(connection, pending):
    """Yields the unmasked payload of each client frame."""
    while True:
        while len(pending) >= 2:
            length, at = pending[1] & 0x7F, 2
            if length == 126:
                if len(pending) < 4:
                    break
                length, at = int.from_bytes(pending[2:4], "big"), 4
            elif length == 127:
                if len(pending) < 10:
                    break
                length, at = int.from_bytes(pending[2:10], "big"), 10
            if len(pending) < at + 4 + length:
                break
            mask = pending[at:at + 4]
            payload = bytearray(pending[at + 4:at + 4 + length])
            pending = pending[at + 4 + length:]
            for i in range(len(payload)):
                payload[i] ^= mask[i % 4]
            yield payload
        data = connection.recv(65536)
        if not data:
            return
        pending += data


DROP = "--drop" in sys.argv[1:]
first_connection = threading.Lock()


def serve(connection):
    dropping = DROP and first_connection.acquire(blocking=False)
    request = b""
    while b"\r\n\r\n" not in request:
        data = connection.recv(4096)
        if not data:
            return
        request += data
    head, _, rest = request.partition(b"\r\n\r\n")
    key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    for count, payload in enumerate(frames(connection, rest), 1):
        if count == 5 and dropping:
            continue
        if count == 5 and not DROP:
            payload[len(payload) // 2] ^= 1
        if len(payload) < 126:
            header = bytes([0x82, len(payload)])
        else:
            header = bytes([0x82, 126]) + len(payload).to_bytes(2, "big")
        connection.sendall(header + bytes(payload))


def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print("listening on 127.0.0.1:%d" % listener.getsockname()[1], flush=True)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=serve, args=(connection,), daemon=True).start()


main()
