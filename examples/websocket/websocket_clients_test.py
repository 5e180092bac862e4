"""Conformance of examples/websocket's echo server with clients nobody here wrote.

- python3-websockets 10.4 (Debian): messages of every length boundary, text and binary, with
  and without permessage-deflate, fragmented sends (a character split between fragments),
  pings, the close handshake with the client's codes, 50 clients at once; on one loop and on
  two loops with SO_REUSEPORT.
- python3-wsproto 1.2 (Debian): its own handshake and framing, with permessage-deflate.
- Node's ws 8 (Debian node-ws): echo with and without perMessageDeflate, close codes.
- Raw frames from this script for what clients never send: every RFC 6455 rule a peer can
  break (reserved bits and opcodes, masking, control frame limits, fragmentation order, invalid
  UTF-8 whole, across fragments and cut at the end, close payloads and codes, 2^63 lengths, a
  message past the limit, a zip bomb), each answered with the close code the RFC names and the
  end of the connection; invalid text fails before the rest of its frame is sent; the server
  serves on.

Usage: websocket_clients_test.py <echo_server binary>. Missing packages fail the test (tools/bazel
installs them). Loopback only; every wait is bounded.
"""

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import websockets
import wsproto
import wsproto.events
import wsproto.extensions

FAILURES = []
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def check(condition, message):
    if not condition:
        FAILURES.append(message)
        print("FAIL:", message, flush=True)


def start(binary, args):
    process = subprocess.Popen([binary, "--port=0"] + args, stdout=subprocess.PIPE,
                               stderr=tempfile.TemporaryFile())
    line = process.stdout.readline().decode()
    if "listening on" not in line:
        raise RuntimeError("echo_server did not start: %r" % line)
    return process, int(line.rsplit(":", 1)[1])


def stop(process):
    process.terminate()
    try:
        code = process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    check(code == 0, "the server exited with %r" % code)


# ---- python3-websockets ----

async def websockets_echo(port, compression):
    uri = "ws://127.0.0.1:%d/" % port
    async with websockets.connect(uri, compression=compression, max_size=None,
                                  open_timeout=10, close_timeout=10) as ws:
        if compression:
            check(len(ws.extensions) == 1, "permessage-deflate was not agreed")
        for size in (0, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20):
            text = ("\u00e9" * (size // 2)) + ("x" * (size % 2))  # Two bytes a character.
            await ws.send(text)
            echo = await asyncio.wait_for(ws.recv(), 10)
            check(echo == text, "text of %d bytes came back changed (%s)" % (size, compression))
            data = os.urandom(size)
            await ws.send(data)
            echo = await asyncio.wait_for(ws.recv(), 10)
            check(echo == data, "binary of %d bytes came back changed (%s)" % (size, compression))
        # Fragments, a character split between two of them at the byte level by websockets.
        await ws.send(["caf", "\u00e9 ", "au ", "lait"])
        check(await asyncio.wait_for(ws.recv(), 10) == "caf\u00e9 au lait", "fragmented text")
        await ws.send([b"\x00" * 70000, b"\x01" * 3])
        check(await asyncio.wait_for(ws.recv(), 10) == b"\x00" * 70000 + b"\x01" * 3,
              "fragmented binary")
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 10)
        await ws.close(4001, "done")
        check(ws.close_code == 4001, "the server did not answer close 4001: %r" % ws.close_code)


async def websockets_many(port, clients, messages):
    async def one(index):
        async with websockets.connect("ws://127.0.0.1:%d/" % port, open_timeout=10) as ws:
            for n in range(messages):
                message = "client %d message %d %s" % (index, n, "y" * (n * 37 % 3000))
                await ws.send(message)
                if await asyncio.wait_for(ws.recv(), 10) != message:
                    return False
            return True
    results = await asyncio.gather(*(one(i) for i in range(clients)))
    check(all(results), "%d of %d concurrent clients saw a wrong echo" %
          (results.count(False), clients))


async def websockets_close_codes(port):
    for code in (1000, 1001, 1003, 1007, 1008, 1011, 3000, 4999):
        async with websockets.connect("ws://127.0.0.1:%d/" % port, open_timeout=10) as ws:
            await ws.close(code, "bye")
            check(ws.close_code == code, "close %d answered with %r" % (code, ws.close_code))


# ---- python3-wsproto ----

def wsproto_echo(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    sock.sendall(connection.send(wsproto.events.Request(
        host="localhost", target="/",
        extensions=[wsproto.extensions.PerMessageDeflate()])))
    accepted = None
    received = []
    closed = None

    def pump():
        nonlocal accepted, closed
        data = sock.recv(65536)
        connection.receive_data(data if data else None)
        for event in connection.events():
            if isinstance(event, wsproto.events.AcceptConnection):
                accepted = event
            elif isinstance(event, wsproto.events.TextMessage):
                received.append(event.data)
            elif isinstance(event, wsproto.events.BytesMessage):
                received.append(bytes(event.data))
            elif isinstance(event, wsproto.events.CloseConnection):
                closed = event.code
                if connection.state == wsproto.connection.ConnectionState.REMOTE_CLOSING:
                    sock.sendall(connection.send(event.response()))
        return bool(data)

    while accepted is None:
        if not pump():
            break
    check(accepted is not None and len(accepted.extensions) == 1,
          "wsproto: no accepted upgrade with permessage-deflate")
    if accepted is None:
        return
    messages = ["short", "z" * 100000, b"\x07" * 5000]
    for message in messages:
        if isinstance(message, str):
            sock.sendall(connection.send(wsproto.events.TextMessage(data=message)))
        else:
            sock.sendall(connection.send(wsproto.events.BytesMessage(data=message)))
    deadline = time.time() + 10
    while len(received) < len(messages) and time.time() < deadline:
        if not pump():
            break
    check(received == messages, "wsproto: echoes differ")
    sock.sendall(connection.send(wsproto.events.CloseConnection(code=1000)))
    while closed is None and time.time() < deadline:
        if not pump():
            break
    check(closed == 1000, "wsproto: close answered with %r" % closed)
    sock.close()


# ---- Node's ws ----

NODE_SCRIPT = r"""
const WebSocket = require("ws");
const [port, deflate] = [process.argv[2], process.argv[3] === "deflate"];
const ws = new WebSocket("ws://127.0.0.1:" + port + "/", { perMessageDeflate: deflate });
const sent = [];
for (const size of [0, 1, 125, 126, 65535, 65536, 300000]) {
  sent.push("n".repeat(size));
  sent.push(Buffer.alloc(size, 7));
}
let got = 0;
const errors = [];
ws.on("open", () => { for (const m of sent) ws.send(m); });
ws.on("message", (data, isBinary) => {
  const want = sent[got++];
  const same = typeof want === "string" ? (!isBinary && data.toString() === want)
                                        : (isBinary && Buffer.compare(data, want) === 0);
  if (!same) errors.push("message " + (got - 1) + " differs");
  if (got === sent.length) ws.close(3333, "node done");
});
ws.on("close", (code) => {
  console.log(JSON.stringify({ got, errors, code,
                               extensions: ws.extensions, expected: sent.length }));
  process.exit(0);
});
ws.on("error", (e) => { console.log(JSON.stringify({ error: String(e) })); process.exit(1); });
setTimeout(() => { console.log(JSON.stringify({ error: "timeout", got })); process.exit(1); }, 20000);
"""


def node_echo(port, deflate):
    with tempfile.NamedTemporaryFile("w", suffix=".js", delete=False) as script:
        script.write(NODE_SCRIPT)
    env = dict(os.environ, NODE_PATH="/usr/share/nodejs")
    try:
        output = subprocess.run(["node", script.name, str(port), "deflate" if deflate else "plain"],
                                capture_output=True, text=True, timeout=30, env=env)
    finally:
        os.unlink(script.name)
    try:
        result = json.loads(output.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        check(False, "node ws: no result (%s)" % output.stderr.strip()[-300:])
        return
    check("error" not in result, "node ws (%s): %s" % (deflate, result))
    check(result.get("got") == result.get("expected") and not result.get("errors"),
          "node ws (%s): %s" % (deflate, result))
    check(result.get("code") == 3333, "node ws (%s): close code %r" % (deflate, result.get("code")))
    if deflate:
        check("permessage-deflate" in (result.get("extensions") or ""),
              "node ws: permessage-deflate not agreed: %r" % result.get("extensions"))


# ---- raw frames ----

def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length is None else length
    if n < 126:
        header = struct.pack("!BB", first, (0x80 if mask else 0) | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, n)
    else:
        header = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, n)
    if not mask:
        return header + payload
    key = b"\x1a\x2b\x3c\x4d"
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def raw_upgrade(port, extensions=None):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    request = ("GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               % KEY)
    if extensions:
        request += "Sec-WebSocket-Extensions: %s\r\n" % extensions
    sock.sendall((request + "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    return sock, head.decode(), rest


def read_frames(sock, rest=b"", until_close=True, timeout=5):
    """The server's frames, as (opcode, payload), until its close frame and EOF."""
    frames = []
    data = rest
    sock.settimeout(timeout)
    ended = False
    while True:
        while len(data) >= 2:
            opcode = data[0] & 0x0F
            n = data[1] & 0x7F
            offset = 2
            if n == 126:
                if len(data) < 4:
                    break
                n = struct.unpack("!H", data[2:4])[0]
                offset = 4
            elif n == 127:
                if len(data) < 10:
                    break
                n = struct.unpack("!Q", data[2:10])[0]
                offset = 10
            if len(data) < offset + n:
                break
            frames.append((opcode, data[offset:offset + n]))
            data = data[offset + n:]
        if ended or (frames and frames[-1][0] == 8 and not until_close):
            return frames, ended
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return frames, True
        if not chunk:
            ended = True
        data += chunk


def probe(port, name, payload_bytes, expected_code, extensions=None, split=False):
    sock, head, rest = raw_upgrade(port, extensions)
    if not head.startswith("HTTP/1.1 101"):
        check(False, "%s: no upgrade: %r" % (name, head[:80]))
        return
    try:
        if split:
            for i in range(len(payload_bytes)):
                sock.sendall(payload_bytes[i:i + 1])
        else:
            sock.sendall(payload_bytes)
    except (BrokenPipeError, ConnectionResetError):
        pass  # The server may close before all of it is sent; its close frame is still read.
    frames, ended = read_frames(sock, rest)
    sock.close()
    closes = [payload for opcode, payload in frames if opcode == 8]
    if expected_code is None:
        check(not closes, "%s: closed, though valid: %r" % (name, closes))
        return
    code = struct.unpack("!H", closes[0][:2])[0] if closes and len(closes[0]) >= 2 else None
    check(code == expected_code, "%s: close code %r, expected %d" % (name, code, expected_code))
    check(ended, "%s: the connection did not end" % name)


def raw_probes(port):
    cases = [
        ("RSV1 without an extension", frame(1, b"x", rsv=4), 1002),
        ("RSV2", frame(1, b"x", rsv=2), 1002),
        ("RSV3", frame(1, b"x", rsv=1), 1002),
        ("unmasked client frame", frame(1, b"hi", mask=False), 1002),
        ("ping of 126 bytes", frame(9, b"p" * 126), 1002),
        ("fragmented ping", frame(9, b"p", fin=False), 1002),
        ("continuation with no message", frame(0, b"x"), 1002),
        ("text inside a fragmented message", frame(1, b"a", fin=False) + frame(1, b"b"), 1002),
        ("binary inside a fragmented message", frame(2, b"a", fin=False) + frame(2, b"b"), 1002),
        ("invalid UTF-8", frame(1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"),
         1007),
        ("invalid UTF-8 across fragments", frame(1, b"\xe2\x82", fin=False) + frame(0, b"\x41"),
         1007),
        ("text cut inside a character", frame(1, b"ok\xe2\x82"), 1007),
        ("overlong UTF-8", frame(1, b"\xc0\xaf"), 1007),
        ("close of one byte", frame(8, b"\x03"), 1002),
        ("close reason not UTF-8", frame(8, struct.pack("!H", 1000) + b"\xff\xfe"), 1007),
        ("2^63 length", frame(2, b"", length=1 << 63)[:10] + b"\x00\x00\x00\x00", 1002),
        ("a message past the limit", frame(2, b"m" * (2 << 20)), 1009),
        ("fragments past the limit", frame(2, b"m" * (600 << 10), fin=False) +
         frame(0, b"m" * (600 << 10)), 1009),
    ]
    for opcode in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
        cases.append(("reserved opcode %d" % opcode, frame(opcode, b"x"), 1002))
    for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
        cases.append(("close code %d" % code, frame(8, struct.pack("!H", code)), 1002))
    for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999):
        cases.append(("valid close code %d echoed" % code, frame(8, struct.pack("!H", code)), code))
    for name, data, code in cases:
        probe(port, name, data, code)
    # Split byte by byte: the same verdicts.
    probe(port, "invalid UTF-8, byte by byte", frame(1, b"ab\xed\xa0\x80cd"), 1007, split=True)
    probe(port, "reserved opcode, byte by byte", frame(5, b"x"), 1002, split=True)

    # Fail fast: the frame's first bytes hold invalid text; the rest is never sent.
    sock, head, rest = raw_upgrade(port)
    whole = frame(1, b"\xce\xba\xed\xa0\x80" + b"a" * 100000)
    sock.sendall(whole[:14 + 5])  # Header (2 + 8 + 4), then five payload bytes.
    frames, ended = read_frames(sock, rest)
    closes = [p for o, p in frames if o == 8]
    check(closes and struct.unpack("!H", closes[0][:2])[0] == 1007 and ended,
          "invalid text did not fail before the rest of its frame: %r" % frames)
    sock.close()

    # Pings between fragments are answered at once; the message still arrives whole.
    sock, head, rest = raw_upgrade(port)
    sock.sendall(frame(1, b"Hel", fin=False) + frame(9, b"p1") + frame(0, b"lo", fin=False) +
                 frame(9, b"p2") + frame(0, b"!") + frame(8, struct.pack("!H", 1000)))
    frames, ended = read_frames(sock, rest)
    check(frames[:4] == [(10, b"p1"), (10, b"p2"), (1, b"Hello!"), (8, struct.pack("!H", 1000))],
          "interleaved pings: %r" % frames[:4])
    sock.close()

    # A zip bomb through permessage-deflate: 64 MiB of zeros in about 64 KiB.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(b"\x00" * (64 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    probe(port, "a zip bomb", frame(2, bomb[:-4], rsv=4), 1009, extensions="permessage-deflate")
    # And a compressed message that is not deflate data.
    probe(port, "corrupt deflate data", frame(2, b"\xff\xff\xff\xff\x00", rsv=4), 1007,
          extensions="permessage-deflate")

    # After all that, the server still echoes.
    sock, head, rest = raw_upgrade(port)
    sock.sendall(frame(1, b"still here") + frame(8, struct.pack("!H", 1000)))
    frames, ended = read_frames(sock, rest)
    check(frames and frames[0] == (1, b"still here"), "the server stopped echoing: %r" % frames)
    sock.close()


def http_on_the_same_port(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    response = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        response += chunk
    check(response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n"),
          "a plain GET was answered %r" % response[:40])
    sock.close()


def main():
    binary = sys.argv[1]
    for args in (["--loops=1"], ["--loops=2", "--reuseport"]):
        process, port = start(binary, args + ["--deflate", "--max_message_mib=1"])
        try:
            print("websockets against", args, flush=True)
            asyncio.run(websockets_echo(port, None))
            asyncio.run(websockets_echo(port, "deflate"))
            asyncio.run(websockets_many(port, 50, 20))
            asyncio.run(websockets_close_codes(port))
            print("wsproto", flush=True)
            wsproto_echo(port)
            print("node ws", flush=True)
            node_echo(port, False)
            node_echo(port, True)
            print("raw probes", flush=True)
            raw_probes(port)
            http_on_the_same_port(port)
        finally:
            stop(process)
    if FAILURES:
        print("%d failure(s)" % len(FAILURES))
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
