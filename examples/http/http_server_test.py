"""End-to-end checks of examples/http with curl and raw sockets.

curl: a GET with its headers, connection reuse over keep-alive, HTTP/1.0's close, a POST body,
a 404, HEAD. Raw sockets: pipelined requests answered in order in one read, a request split
byte by byte, a body split from its head, garbage (400 and a close), an oversized head (431
and a close), an HTTP/1.0 keep-alive, the Date header's format and its refresh. Each runs
against one loop and against two loops with SO_REUSEPORT; then HTTPS (--tls_cert) with curl:
verified, ALPN http/1.1, kept alive, and --tls_client_ca (a client certificate of the CA served,
none or another CA's refused). Then --header_timeout (408 for a trickling head) and
--keepalive_timeout, and 250 slow heads at a 256-descriptor limit beside ordinary requests, each
answered within 1 s. curl comes from Debian (tools/bazel
installs it); missing, the test fails. Loopback only; every wait is bounded.
"""

import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

FAILURES = []
DATE = re.compile(rb"Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d "
                  rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
                  rb"\d\d:\d\d:\d\d GMT\r\n")


def check(condition, message):
    if not condition:
        FAILURES.append(message)
        print("FAIL:", message, flush=True)


def start(binary, args, descriptors=None):
    # stderr to a file: a pipe nobody reads could fill and block the server.
    def limit():
        if descriptors is not None:  # Soft and hard: the server raises soft to hard.
            resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))
    process = subprocess.Popen([binary, "--port=0"] + args, stdout=subprocess.PIPE,
                               stderr=tempfile.TemporaryFile(), preexec_fn=limit)
    line = process.stdout.readline().decode()
    if "listening on" not in line:
        raise RuntimeError("http_server did not start: %r" % line)
    return process, int(line.rsplit(":", 1)[1])


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_responses(sock, count):
    """Reads `count` whole responses (heads with a Content-Length body); returns them."""
    data = b""
    responses = []
    while len(responses) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            length = int(re.search(rb"Content-Length: (\d+)", data[:end]).group(1))
            if len(data) >= end + 4 + length:
                responses.append(data[:end + 4 + length])
                data = data[end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return responses, data


def closed_after(sock):
    sock.settimeout(5)
    try:
        rest = sock.recv(65536)
        return rest == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "10"] + list(args), capture_output=True,
                          timeout=30)


def with_curl(port):
    url = "http://127.0.0.1:%d/plaintext" % port
    got = curl("-i", url)
    check(got.returncode == 0 and got.stdout.endswith(b"\r\n\r\nHello, World!"),
          "curl GET: %r %r" % (got.stdout, got.stderr))
    check(b"Content-Length: 13\r\n" in got.stdout and b"Content-Type: text/plain" in got.stdout,
          "curl GET headers: %r" % got.stdout)
    check(DATE.search(got.stdout) is not None, "a Date header in IMF-fixdate: %r" % got.stdout)
    twice = curl("-v", url, url)
    check(twice.stdout == b"Hello, World!Hello, World!", "two GETs: %r" % twice.stdout)
    check(b"Re-using existing connection" in twice.stderr or b"Reusing existing" in twice.stderr,
          "curl reuses the kept-alive connection: %r" % twice.stderr[-400:])
    old = curl("-i", "--http1.0", url)
    check(b"Connection: close\r\n" in old.stdout and old.stdout.endswith(b"Hello, World!"),
          "HTTP/1.0 closes: %r" % old.stdout)
    posted = curl("-i", "--data-binary", "x" * 100000, url)
    check(posted.stdout.startswith(b"HTTP/1.1 200 OK") and posted.stdout.endswith(b"World!"),
          "POST with a body: %r" % posted.stdout[:200])
    missing = curl("-i", "http://127.0.0.1:%d/nothing" % port)
    check(missing.stdout.startswith(b"HTTP/1.1 404 Not Found"), "404: %r" % missing.stdout)
    head = curl("-I", url)
    check(head.stdout.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 13" in head.stdout,
          "HEAD: %r" % head.stdout)


def with_sockets(port):
    request = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"
    sock = connect(port)
    sock.sendall(request * 20)
    responses, rest = read_responses(sock, 20)
    check(len(responses) == 20 and not rest, "20 pipelined requests: %d answered" % len(responses))
    check(all(r.endswith(b"Hello, World!") for r in responses), "pipelined bodies")
    for byte in request:  # Split byte by byte.
        sock.sendall(bytes([byte]))
        time.sleep(0.001)
    responses, _ = read_responses(sock, 1)
    check(len(responses) == 1, "a request split byte by byte")
    body = b"y" * 5000
    sock.sendall(b"POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) +
                 body[:10])
    time.sleep(0.05)
    sock.sendall(body[10:] + request)
    responses, _ = read_responses(sock, 2)
    check(len(responses) == 2, "a body split from its head, then a request after it")
    sock.close()

    for garbage, status in ((b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, b"400"),
                            (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"400"),
                            (b"GET / HTTP/1.1\r\nUser-Agent: no host\r\n\r\n", b"400"),
                            (b"GET / HTTP/3.0\r\n\r\n", b"505"),
                            (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"431"),
                            (b"GET / HTTP/1.1\r\nX: " + b"b" * 9000, b"431"),
                            # Far more than the server reads before it answers: the rest must
                            # not turn the close into a reset that destroys the 431.
                            (b"GET /" + b"c" * 600000, b"431")):
        sock = connect(port)
        sock.sendall(garbage + b"\r\n\r\n")
        responses, _ = read_responses(sock, 1)
        check(len(responses) == 1 and responses[0].startswith(b"HTTP/1.1 " + status),
              "%r... answered %s: %r" % (garbage[:20], status, responses[:1]))
        check(responses and b"Connection: close" in responses[0], "the error says close")
        check(closed_after(sock), "%r...: the connection closes after the error" % garbage[:20])
        sock.close()

    sock = connect(port)
    sock.sendall(b"GET /plaintext HTTP/1.1\nHost: x\n\n" * 2)  # Bare LF line ends, as nginx takes.
    responses, _ = read_responses(sock, 2)
    check(len(responses) == 2 and responses[1].endswith(b"Hello, World!"),
          "requests with bare LF line ends are answered")
    sock.close()

    sock = connect(port)
    sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2)
    responses, _ = read_responses(sock, 2)
    check(len(responses) == 2 and b"Connection: keep-alive" in responses[1],
          "HTTP/1.0 keep-alive keeps the connection")
    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
    responses, _ = read_responses(sock, 1)
    check(len(responses) == 1 and closed_after(sock), "HTTP/1.0 without keep-alive closes")
    sock.close()

    sock = connect(port)
    sock.sendall(request)
    first = DATE.search(read_responses(sock, 1)[0][0]).group(0)
    time.sleep(2.1)
    sock.sendall(request)
    second = DATE.search(read_responses(sock, 1)[0][0]).group(0)
    check(first != second, "the Date header is refreshed: %r then %r" % (first, second))
    sock.close()


def ended_within(sock, seconds):
    """What the server sent before it closed, or None if it was still open after `seconds`."""
    sock.settimeout(seconds)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except socket.timeout:
        return None
    except ConnectionResetError:
        return data


def with_timeouts(binary):
    """--header_timeout: a head that trickles gets 408 and a close; --keepalive_timeout: an
    idle keep-alive connection is closed; a connection that keeps asking is not."""
    print("== http_server timeouts", flush=True)
    process, port = start(binary, ["--loops=1", "--header_timeout=1s", "--keepalive_timeout=1s"])
    try:
        slow = connect(port)
        slow.sendall(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n")  # Never finished.
        idle = connect(port)
        idle.sendall(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
        answer, _ = read_responses(idle, 1)
        check(len(answer) == 1 and b"200 OK" in answer[0], "the idle connection's request answered")
        busy = connect(port)
        answered = 0
        for _ in range(9):  # Past both timeouts (at least 2.7 s), a request every 0.3 s.
            busy.sendall(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
            answered += len(read_responses(busy, 1)[0])
            time.sleep(0.3)
        check(answered == 9, "a connection that keeps asking is served: %d of 9" % answered)
        slow_end = ended_within(slow, 3)
        check(slow_end is not None and b"408 Request Timeout" in slow_end,
              "a trickling head gets 408 and a close: %r" % slow_end)
        idle_end = ended_within(idle, 3)
        check(idle_end == b"", "an idle keep-alive connection is closed: %r" % idle_end)
        for sock in (slow, idle, busy):
            sock.close()
    finally:
        process.terminate()
        check(process.wait(timeout=20) == 0, "http_server with timeouts exits cleanly")


def with_few_descriptors(binary):
    """At a 256-descriptor limit, 250 connections that send a head a byte at a time hold what
    they can; ordinary requests are still answered, each within 1 s, because a new connection
    takes the place of the one that has waited longest."""
    print("== http_server at 256 descriptors", flush=True)
    process, port = start(binary, ["--loops=1"], descriptors=256)
    slow = []
    try:
        for _ in range(250):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.sendall(b"G")
                slow.append(sock)
            except OSError:
                break  # Refused or shed: the server is full, as intended.
        trickle_until = time.time() + 1
        while time.time() < trickle_until:  # The heads keep trickling meanwhile.
            for sock in slow:
                try:
                    sock.send(b"E")
                except OSError:
                    pass
            time.sleep(0.2)
        served = 0
        slowest = 0.0
        for _ in range(20):
            started = time.time()
            try:
                sock = connect(port)
                sock.settimeout(1)
                sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                response = ended_within(sock, 1)
                sock.close()
            except OSError:
                response = None
            elapsed = time.time() - started
            slowest = max(slowest, elapsed)
            if response is not None and b"200 OK" in response and elapsed < 1:
                served += 1
        check(served == 20, "ordinary requests served beside 250 slow heads at 256 descriptors: "
              "%d of 20, the slowest in %.2f s" % (served, slowest))
    finally:
        for sock in slow:
            sock.close()
        process.terminate()
        check(process.wait(timeout=20) == 0, "http_server at 256 descriptors exits cleanly")


def main():
    binary = sys.argv[1]
    if shutil.which("curl") is None:
        print("FAIL: curl is missing: apt-get install curl (tools/bazel installs it)")
        return 1
    for mode in (["--loops=1"], ["--loops=2", "--reuseport"]):
        print("== http_server", " ".join(mode), flush=True)
        process, port = start(binary, mode)
        try:
            with_curl(port)
            with_sockets(port)
        finally:
            process.terminate()
            code = process.wait(timeout=20)
            check(code == 0, "http_server %s exits cleanly: %s" % (mode, code))
    with_https(binary)
    with_timeouts(binary)
    with_few_descriptors(binary)
    print("%d failures" % len(FAILURES))
    return 1 if FAILURES else 0


def with_https(binary):
    """HTTPS (--tls_cert/--tls_key) with curl: verified, HTTP/1.1 over ALPN, kept alive."""
    print("== http_server over TLS", flush=True)
    with tempfile.TemporaryDirectory() as directory:
        cert, key = directory + "/cert.pem", directory + "/key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert],
                       capture_output=True, check=True, timeout=60)
        process, port = start(binary, ["--loops=1", "--tls_cert=" + cert, "--tls_key=" + key])
        try:
            url = "https://localhost:%d/plaintext" % port
            result = curl("--cacert", cert, "--resolve", "localhost:%d:127.0.0.1" % port, "-v",
                          url, url)
            check(result.returncode == 0, "curl https: %s" % result.stderr.decode()[-1500:])
            check(result.stdout == b"Hello, World!Hello, World!",
                  "curl https body: %r" % result.stdout)
            err = result.stderr.decode()
            check("ALPN: server accepted http/1.1" in err or "ALPN, server accepted to use http/1.1"
                  in err, "curl https negotiated http/1.1 by ALPN")
            check("Re-using existing connection" in err or "Reusing existing connection" in err,
                  "curl https kept the connection for the second request")
            plain = curl("http://127.0.0.1:%d/plaintext" % port)
            check(plain.stdout != b"Hello, World!", "plain HTTP on the TLS port is not served")
        finally:
            process.terminate()
            code = process.wait(timeout=20)
            check(code == 0, "http_server over TLS exits cleanly: %s" % code)
        with_client_certificates(binary, directory, cert, key)


def make_client_certificate(directory, name, ca_cert, ca_key):
    key, csr = directory + "/" + name + ".key", directory + "/" + name + ".csr"
    cert = directory + "/" + name + ".pem"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=" + name, "-keyout", key,
                    "-out", csr], capture_output=True, check=True, timeout=60)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
                    "-CAcreateserial", "-days", "2", "-out", cert],
                   capture_output=True, check=True, timeout=60)
    return cert, key


def with_client_certificates(binary, directory, cert, key):
    """--tls_client_ca: curl with a certificate of the CA is served; without one, or with one of
    another CA, it is refused."""
    print("== http_server over TLS with --tls_client_ca", flush=True)
    cas = {}
    for name in ("clients-ca", "other-ca"):
        ca_key, ca_cert = directory + "/" + name + ".key", directory + "/" + name + ".pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=" + name,
                        "-keyout", ca_key, "-out", ca_cert],
                       capture_output=True, check=True, timeout=60)
        cas[name] = (ca_cert, ca_key)
    good = make_client_certificate(directory, "good-client", *cas["clients-ca"])
    stranger = make_client_certificate(directory, "stranger", *cas["other-ca"])
    process, port = start(binary, ["--loops=1", "--tls_cert=" + cert, "--tls_key=" + key,
                                   "--tls_client_ca=" + cas["clients-ca"][0]])
    try:
        url = "https://localhost:%d/plaintext" % port
        base = ["--cacert", cert, "--resolve", "localhost:%d:127.0.0.1" % port]
        served = curl(*base, "--cert", good[0], "--key", good[1], url)
        check(served.returncode == 0 and served.stdout == b"Hello, World!",
              "curl with a client certificate of the CA: %d %r %s" %
              (served.returncode, served.stdout, served.stderr.decode()[-500:]))
        for what, extra in (("without a client certificate", []),
                            ("with another CA's client certificate",
                             ["--cert", stranger[0], "--key", stranger[1]])):
            refused = curl(*base, *extra, url)
            check(refused.returncode != 0 and refused.stdout != b"Hello, World!",
                  "curl %s is refused: %d %r" % (what, refused.returncode, refused.stdout))
    finally:
        process.terminate()
        check(process.wait(timeout=20) == 0, "http_server with --tls_client_ca exits cleanly")


if __name__ == "__main__":
    sys.exit(main())
