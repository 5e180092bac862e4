"""End-to-end checks of examples/redis with real Redis clients and redis-server itself.

- redis-cli: single commands, and --pipe of 100,000 SETs (every reply counted, none an error).
- A differential test: the same random command stream, split at random points, goes to our
  server and to redis-server (7.0, from Debian); the replies must be equal byte for byte.
- Protocol errors: each bad request gets Redis's reply (after the replies to the commands
  before it) and the connection closes, as with redis-server, ending as it does (a FIN), or with
  a FIN where redis-server closes with input it never read and the kernel resets (ours lingers).
- Inline commands of 60, 100 and 300 KiB split at random points: answered, or refused as too
  big, as redis-server does.
- 300 pipelined GETs of a 1 MiB value: the same 300 MiB answer as redis-server's, while our
  server's peak memory grows by less than its output mark plus 24 MiB.
- A restart (--handoff, SIGHUP): the old server closes a quiet connection at once, answers a
  command it had only part of and then closes, and exits cleanly; the new one serves the port.

Every check runs against one loop and against two loops with SO_REUSEPORT. Needs redis-server
and redis-cli (Debian's redis-server and redis-tools; tools/bazel installs them): missing,
the test fails. Loopback only; every wait is bounded.
"""

import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

FAILURES = []


def check(condition, message):
    if not condition:
        FAILURES.append(message)
        print("FAIL:", message, flush=True)


def start_ours(binary, args):
    # AddressSanitizer keeps freed memory in quarantine (256 MiB): the memory check would see
    # that, not what the server holds.
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0"
    # stderr to a file: a pipe nobody reads could fill and block the server.
    process = subprocess.Popen([binary, "--port=0"] + args, stdout=subprocess.PIPE,
                               stderr=tempfile.TemporaryFile(), env=env)
    line = process.stdout.readline().decode()
    if "listening on" not in line:
        raise RuntimeError("redis_server did not start: %r" % line)
    port = int(line.rsplit(":", 1)[1])
    return process, ("127.0.0.1", port)


def start_redis(directory):
    path = os.path.join(directory, "redis.sock")
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", path, "--save", "", "--appendonly", "no",
         "--dir", directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while not os.path.exists(path):
        if time.time() > deadline or process.poll() is not None:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.02)
    return process, path


def connect(address):
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(10)
    sock.connect(address)
    return sock


def read_until(sock, suffix, limit=64 << 20):
    data = bytearray()
    while not data.endswith(suffix):
        chunk = sock.recv(1 << 16)
        if not chunk or len(data) > limit:
            break
        data += chunk
    return bytes(data)


def read_to_end(sock):
    data = bytearray()
    sock.settimeout(5)
    try:
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return bytes(data), "eof"
            data += chunk
    except socket.timeout:
        return bytes(data), "open"
    except ConnectionResetError:
        return bytes(data), "reset"


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        arg = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def random_command(rng):
    keys = [b"k%d" % i for i in range(12)] + [b"counter", b"\xff\x00bin"]
    key = rng.choice(keys)
    value = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 5, 40, 3000])))
    number = str(rng.choice([0, 1, -7, 41, 9223372036854775806, 9223372036854775807])).encode()
    choice = rng.randrange(19)
    if choice == 0:
        return resp(b"SET", key, value)
    if choice == 1:
        return resp(b"set", key, number)
    if choice == 2:
        return resp(b"GET", key)
    if choice == 3:
        return resp(b"INCR", key)
    if choice == 4:
        return resp(b"DEL", *rng.sample(keys, rng.randrange(1, 4)))
    if choice == 5:
        return resp(b"EXISTS", *[rng.choice(keys) for _ in range(rng.randrange(1, 4))])
    if choice == 6:
        return resp(b"SET", key, value, rng.choice([b"NX", b"XX", b"nx"]))
    if choice == 7:
        return resp(b"SET", key, value, b"EX", rng.choice([b"1000", b"0", b"-1", b"x", b"99999999999999999"]))
    if choice == 8:
        return resp(b"SET", key, value, b"PX", b"100000", b"GET")
    if choice == 9:
        return resp(b"SET", key, value, rng.choice([b"NX", b"KEEPTTL"]), rng.choice([b"XX", b"EX", b"GET"]))
    if choice == 10:
        return resp(b"PING") if rng.random() < 0.5 else resp(b"PING", value)
    if choice == 11:
        return resp(b"ECHO", value)
    if choice == 12:
        return resp(rng.choice([b"NOSUCH", b"frobnicate", b"x\r\ny"]), *[value[:200]] * rng.randrange(3))
    if choice == 13:
        return resp(rng.choice([b"GET", b"SET", b"INCR", b"ECHO", b"DEL"]))  # Wrong arity.
    if choice == 14:
        return b"set %s %d\r\n" % (rng.choice([b"k1", b"k2", b'"k 3"']), rng.randrange(100))
    if choice == 15:
        return rng.choice([b"get k1\r\n", b"PING\n", b"\r\n", b"incr k2\r\n", b"echo 'a\\'b' \"\\x41\\n\"\r\n"])
    if choice == 16:
        return b"*0\r\n" if rng.random() < 0.5 else b"*-1\r\n"
    if choice == 17:
        return resp(b"EXISTS", key, key)
    return resp(b"INCR", b"counter")


def send_split(sock, stream, rng):
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 2, 3, 7, 64, 1000, 20000])
        sock.sendall(stream[pos:pos + step])
        pos += step
        if rng.random() < 0.05:
            time.sleep(0.002)  # Lets the server read a partial command on its own.


def differential(ours, redis_path, seed):
    rng = random.Random(seed)
    stream = b"".join(random_command(rng) for _ in range(1500))
    marker = b"__differential_end_%d__" % seed
    stream = resp(b"FLUSHALL") + stream + resp(b"ECHO", marker)
    replies = []
    for address in (ours, redis_path):
        sock = connect(address)
        send_split(sock, stream, random.Random(seed * 7 + len(replies)))
        replies.append(read_until(sock, b"$%d\r\n%s\r\n" % (len(marker), marker)))
        sock.close()
    same = replies[0] == replies[1]
    if not same:
        at = next((i for i, (a, b) in enumerate(zip(*replies)) if a != b),
                  min(map(len, replies)))
        print("first difference at byte %d:\n ours:  %r\n redis: %r" %
              (at, replies[0][max(0, at - 80):at + 80], replies[1][max(0, at - 80):at + 80]))
    check(same, "seed %d: replies differ from redis-server's" % seed)


PROTOCOL_ERRORS = [
    b"*abc\r\n",
    b"*2\r\n$3\r\nGET\r\n+x\r\n",
    b"*1\r\n$-1\r\n",
    b"*1\r\n$600000000\r\n",
    b"PING\r\nget \"abc\r\nPING\r\n",
    b'set "a"b c\r\n',  # A closing quote must end its argument.
    b"*1\r\n$4\r\nPING\r\n*x\r\n",
    b"x" * (70 * 1024),
    b"*" + b"1" * (70 * 1024),
    b"*1\r\n" + b"$" + b"1" * (70 * 1024),
    b"quit\r\nping\r\n",
]


def same_end(ours, theirs):
    """Equal replies and ends, except that where redis-server closes with the client's bytes
    unread (the kernel resets) ours lingers and ends with a FIN: the replies survive either way
    here, but a reset can destroy them before the client reads them."""
    return ours == theirs or (ours[0] == theirs[0] and ours[1] == "eof" and theirs[1] == "reset")


def protocol_errors(ours, redis_path):
    for request in PROTOCOL_ERRORS:
        results = []
        for address in (ours, redis_path):
            sock = connect(address)
            sock.sendall(request)
            results.append(read_to_end(sock))
            sock.close()
        check(same_end(*results),
              "request %r: ours %r, redis-server %r" % (request[:40], results[0], results[1]))


def oversized_inline(ours, redis_path, seed):
    """Inline commands over and under redis-server's 64 KiB limit, split at random points: the
    same reply (an ECHO, or the error) and the same end, however the reads cut the line. Over
    80 KiB: redis-server, reading 16 KiB at a time, has seen more than 64 KiB without a line
    end whatever the cuts; between 64 and 80 KiB its answer depends on them."""
    for size in (60 * 1024, 100 * 1024, 300 * 1024):
        request = b"echo " + b"a" * size + b"\r\nping\r\nquit\r\n"
        results = []
        for address in (ours, redis_path):
            sock = connect(address)
            try:
                send_split(sock, request, random.Random(seed * 31 + size + len(results)))
            except OSError:
                pass  # Refused before the rest was sent: the reply and the end tell how.
            results.append(read_to_end(sock))
            sock.close()
        check(same_end(*results), "inline command of %d bytes: ours %r, redis-server %r" %
              (size, (results[0][0][:60], results[0][1]), (results[1][0][:60], results[1][1])))


def server_memory_kib(pid, field):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def large_pipeline(ours, redis_path, pid, high_water_mib):
    """SET k <1 MiB>, then 300 GETs of it in one write, read by a client that starts reading
    late: the same 300 MiB answer as redis-server's (compared by digest), while our server's
    peak memory grows by about its output mark, one reply and the input, not the answer."""
    value = os.urandom(1 << 20)
    request = resp(b"SET", b"big", value) + resp(b"GET", b"big") * 300 + resp(b"PING")
    expected_length = 5 + 300 * (len(b"$1048576\r\n") + len(value) + 2) + 7
    digests = []
    growth_kib = 0
    for address in (ours, redis_path):
        sock = connect(address)
        sock.settimeout(30)
        before = server_memory_kib(pid, "VmRSS") if address is ours else 0
        sock.sendall(request)
        time.sleep(0.5)  # Replies pile up at the server meanwhile, as far as it lets them.
        digest = hashlib.sha256()
        length = 0
        tail = b""
        while not tail.endswith(b"+PONG\r\n"):
            try:
                chunk = sock.recv(1 << 20)
            except OSError as error:  # A reset: the answer is cut short (compared below).
                print("reading the 300 MiB answer:", error, flush=True)
                break
            if not chunk:
                break
            digest.update(chunk)
            length += len(chunk)
            tail = (tail + chunk)[-16:]
        sock.close()
        if address is ours:
            growth_kib = server_memory_kib(pid, "VmHWM") - before
        digests.append((length, digest.hexdigest()))
    check(digests[0] == digests[1] and digests[0][0] == expected_length,
          "300 x 1 MiB pipelined GETs: ours %r, redis-server %r, expected %d bytes" %
          (digests[0], digests[1], expected_length))
    # The mark, a 1 MiB reply, the 1 MiB input and its copy, the stream chunk, with room for
    # the allocator: far below the 300 MiB answer (before streaming: 403 MiB, or a reset).
    limit_kib = (high_water_mib + 24) * 1024
    if "TSAN_OPTIONS" in os.environ or "ASAN_OPTIONS" in os.environ:
        # A sanitizer's shadow memory and allocator: still far below the 300 MiB answer.
        limit_kib *= 4
    print("300 x 1 MiB GETs: peak memory grew by %d KiB (limit %d KiB)" % (growth_kib, limit_kib),
          flush=True)
    check(growth_kib < limit_kib, "peak memory grew by %d KiB for a 300 MiB answer (limit %d)"
          % (growth_kib, limit_kib))


def redis_cli(port, *args, stdin=None):
    return subprocess.run(["redis-cli", "-p", str(port)] + list(args), input=stdin,
                          capture_output=True, timeout=60)


def with_redis_cli(ours):
    port = ours[1]
    check(redis_cli(port, "ping").stdout == b"PONG\n", "redis-cli ping")
    check(redis_cli(port, "set", "greeting", "hello world").stdout == b"OK\n", "redis-cli set")
    check(redis_cli(port, "get", "greeting").stdout == b"hello world\n", "redis-cli get")
    check(redis_cli(port, "incr", "visits").stdout == b"1\n", "redis-cli incr")
    check(redis_cli(port, "get", "nothing").stdout == b"\n", "redis-cli get of a missing key")
    error = redis_cli(port, "nosuch", "a")
    check(b"unknown command 'nosuch'" in error.stdout + error.stderr, "redis-cli unknown command")
    commands = b"".join(resp(b"SET", b"pipe:%d" % i, b"value:%d" % i) for i in range(100000))
    piped = redis_cli(port, "--pipe", stdin=commands)
    check(b"errors: 0, replies: 100000" in piped.stdout,
          "redis-cli --pipe of 100,000 commands: %r" % piped.stdout[-200:])
    check(redis_cli(port, "get", "pipe:99999").stdout == b"value:99999\n", "the last piped SET")
    check(redis_cli(port, "exists", "pipe:0", "pipe:50000", "pipe:100000").stdout == b"2\n",
          "piped keys exist")


def pid_alive(pid):
    try:
        with open("/proc/%d/status" % pid) as status:
            return "\nState:\tZ" not in status.read()
    except FileNotFoundError:
        return False


def drain_on_restart(binary, mode, directory):
    handoff = os.path.join(directory, "handoff-%d" % len(mode))
    pid_file = os.path.join(directory, "pid-%d" % len(mode))
    old, address = start_ours(binary, mode + ["--handoff=" + handoff, "--pid_file=" + pid_file])
    successor = 0
    try:
        deadline = time.time() + 10
        while not os.path.exists(handoff) and time.time() < deadline:
            time.sleep(0.01)
        quiet = connect(address)
        quiet.sendall(resp("PING"))
        check(read_until(quiet, b"\r\n") == b"+PONG\r\n", "drain: PING before the restart")
        partial = connect(address)
        command = resp("SET", "drained", "yes")
        partial.sendall(command[:10])
        time.sleep(1.2)  # Both quiet for longer than the drain's 1 s.
        os.kill(old.pid, signal.SIGHUP)
        start = time.time()
        data, end = read_to_end(quiet)
        check(data == b"" and end == "eof" and time.time() - start < 3,
              "drain: a quiet connection is closed at once (%r, %s)" % (data, end))
        partial.sendall(command[10:])
        data, end = read_to_end(partial)
        check(data == b"+OK\r\n" and end == "eof",
              "drain: a command under way is answered, then the close (%r, %s)" % (data, end))
        check(old.wait(timeout=10) == 0, "drain: the old server exits cleanly")
        with open(pid_file) as f:
            successor = int(f.read())
        check(successor != old.pid, "drain: a new process serves")
        after = connect(address)
        after.sendall(resp("GET", "drained"))  # The store is the old process's: gone with it.
        check(read_until(after, b"\r\n") == b"$-1\r\n",
              "drain: the new server answers on the same port")
        for sock in (quiet, partial, after):
            sock.close()
    finally:
        if old.poll() is None:
            old.kill()
        if successor:
            os.kill(successor, signal.SIGTERM)
            deadline = time.time() + 10
            while pid_alive(successor) and time.time() < deadline:
                time.sleep(0.02)
            check(not pid_alive(successor), "drain: the new server stops on SIGTERM")


def main():
    binary = sys.argv[1]
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            print("FAIL: %s is missing: apt-get install redis-server redis-tools "
                  "(tools/bazel installs them)" % tool)
            return 1
    # In /tmp: a Unix socket's path must fit 108 bytes, and Bazel's TEST_TMPDIR may not.
    directory = tempfile.mkdtemp(prefix="gev-redis-", dir="/tmp")
    redis, redis_path = start_redis(directory)
    try:
        for mode in (["--loops=1"], ["--loops=2", "--reuseport"]):
            print("== redis_server", " ".join(mode), flush=True)
            ours, address = start_ours(binary, mode)
            try:
                with_redis_cli(address)
                for seed in range(1, 5):
                    differential(address, redis_path, seed)
                protocol_errors(address, redis_path)
                oversized_inline(address, redis_path, 1)
                large_pipeline(address, redis_path, ours.pid, 8)
            finally:
                ours.terminate()
                code = ours.wait(timeout=20)
                check(code == 0, "redis_server %s exits cleanly: %s" % (mode, code))
            drain_on_restart(binary, mode, directory)
    finally:
        redis.terminate()
        redis.wait(timeout=20)
        shutil.rmtree(directory, ignore_errors=True)
    print("%d failures" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
