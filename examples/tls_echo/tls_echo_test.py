"""End-to-end checks of examples/tls_echo and the proxy's TLS with real clients.

Python's ssl module: echo of 1 MiB over TLS 1.3 with the chain and host name verified, TLS 1.2
when the server allows it and a refusal when it does not, ALPN, session resumption, a
close_notify answered with one, the certificate files renewed in place and picked up by new
handshakes while an open connection keeps working, garbage and a silent peer closed (the
handshake timeout). `openssl s_client`: a verified echo, and a session it saved resumed. The
proxy: TLS terminated from a Python client and originated to the TLS echo server, and a plain
client through a proxy that originates TLS. Mutual TLS (--client_ca, --tls_client_ca): a client
certificate of the CA served, none or another CA's refused. Certificates are made with `openssl req` when the
test runs. Each server check runs on one loop and on two with SO_REUSEPORT. openssl comes from
Debian (tools/bazel installs it); missing, the test fails. Loopback only; every wait is bounded.
"""

import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

FAILURES = []


def check(condition, message):
    if not condition:
        FAILURES.append(message)
        print("FAIL:", message, flush=True)


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, timeout=60, check=True, **kwargs)


def make_certificates(directory):
    """A CA and two leaf certificates for localhost/127.0.0.1 it signs; returns paths."""
    paths = {}
    ca_key, ca_cert = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.pem")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=tls_echo_test CA", "-keyout", ca_key,
         "-out", ca_cert])
    paths["ca"] = ca_cert
    extensions = os.path.join(directory, "leaf.ext")
    with open(extensions, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("first", "renewed"):
        key, csr = os.path.join(directory, name + ".key"), os.path.join(directory, name + ".csr")
        cert = os.path.join(directory, name + ".pem")
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-subj", "/CN=" + name, "-keyout", key, "-out", csr])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
             "-CAcreateserial", "-days", "2", "-extfile", extensions, "-out", cert])
        paths[name] = (cert, key)
    # Mutual TLS: a client certificate the CA signed, and one of another CA.
    other_key = os.path.join(directory, "other-ca.key")
    other_cert = os.path.join(directory, "other-ca.pem")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=another CA", "-keyout", other_key,
         "-out", other_cert])
    for name, signer_cert, signer_key in (("client", ca_cert, ca_key),
                                          ("stranger", other_cert, other_key)):
        key, csr = os.path.join(directory, name + ".key"), os.path.join(directory, name + ".csr")
        cert = os.path.join(directory, name + ".pem")
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-subj", "/CN=" + name, "-keyout", key, "-out", csr])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", signer_cert, "-CAkey", signer_key,
             "-CAcreateserial", "-days", "2", "-out", cert])
        paths[name] = (cert, key)
    return paths


def start(binary, args):
    # stderr to a file: a pipe nobody reads could fill and block the server.
    process = subprocess.Popen([binary, "--port=0"] + args, stdout=subprocess.PIPE,
                               stderr=tempfile.TemporaryFile())
    line = process.stdout.readline().decode()
    if "listening on" not in line:
        raise RuntimeError("%s did not start: %r" % (binary, line))
    return process, int(line.rsplit(":", 1)[1])


def stop(process, name):
    process.terminate()
    try:
        code = process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    check(code == 0, "%s exited with %s after SIGTERM" % (name, code))


def client_context(ca, **kwargs):
    context = ssl.create_default_context(cafile=ca)
    for key, value in kwargs.items():
        setattr(context, key, value)
    return context


def tls_connect(port, context, session=None):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost", session=session)


def echo(sock, payload):
    """Sends `payload` in pieces while reading the echo; returns what came back."""
    received = b""
    sent = 0
    while len(received) < len(payload):
        if sent < len(payload):
            sock.sendall(payload[sent:sent + 65536])
            sent += 65536
        while len(received) < min(sent, len(payload)):
            chunk = sock.recv(min(sent, len(payload)) - len(received))
            if not chunk:
                return received
            received += chunk
    return received


def closed_soon(sock):
    """True when the server closes within 5 s (after at most an alert or a few records)."""
    sock.settimeout(5)
    seen = 0
    try:
        while seen < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                return True
            seen += len(chunk)
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


def common_name(sock):
    subject = dict(item[0] for item in sock.getpeercert()["subject"])
    return subject.get("commonName")


def check_server(binary, paths, workdir, loop_args):
    where = " ".join(loop_args)
    cert = os.path.join(workdir, "served.pem")
    key = os.path.join(workdir, "served.key")
    shutil.copy(paths["first"][0], cert)
    shutil.copy(paths["first"][1], key)
    process, port = start(binary, loop_args + [
        "--cert=" + cert, "--key=" + key, "--alpn=h2,http/1.1", "--handshake_timeout=1s",
        "--watch_interval=100ms"])
    try:
        context = client_context(paths["ca"])
        with tls_connect(port, context) as sock:
            check(sock.version() == "TLSv1.3", "%s: version %s" % (where, sock.version()))
            check(common_name(sock) == "first", "%s: certificate %s" % (where, common_name(sock)))
            payload = os.urandom(1 << 20)
            check(echo(sock, payload) == payload, "%s: 1 MiB echo over TLS" % where)
            # Our close_notify is answered with the server's (unwrap waits for it).
            sock.unwrap()

        tls12 = client_context(paths["ca"], maximum_version=ssl.TLSVersion.TLSv1_2)
        with tls_connect(port, tls12) as sock:
            check(sock.version() == "TLSv1.2", "%s: TLS 1.2 version %s" % (where, sock.version()))
            check(echo(sock, b"twelve") == b"twelve", "%s: TLS 1.2 echo" % where)

        alpn = client_context(paths["ca"])
        alpn.set_alpn_protocols(["http/1.1"])
        with tls_connect(port, alpn) as sock:
            check(sock.selected_alpn_protocol() == "http/1.1",
                  "%s: ALPN %s" % (where, sock.selected_alpn_protocol()))

        # Resumption: the session of a connection that read its tickets.
        with tls_connect(port, context) as sock:
            echo(sock, b"ticket")
            session = sock.session
            sock.unwrap()
        with tls_connect(port, context, session=session) as sock:
            check(sock.session_reused, "%s: session resumed" % where)
            check(echo(sock, b"resumed") == b"resumed", "%s: echo after resumption" % where)

        # Renewal in place: new handshakes get the new pair, the open connection carries on.
        held = tls_connect(port, context)
        echo(held, b"before")
        shutil.copy(paths["renewed"][0], cert + ".new")
        shutil.copy(paths["renewed"][1], key + ".new")
        os.replace(key + ".new", key)
        os.replace(cert + ".new", cert)
        renewed = False
        deadline = time.monotonic() + 10
        while not renewed and time.monotonic() < deadline:
            with tls_connect(port, context) as sock:
                renewed = common_name(sock) == "renewed"
            time.sleep(0.05)
        check(renewed, "%s: the renewed certificate is served" % where)
        check(echo(held, b"after renewal") == b"after renewal",
              "%s: a connection opened before the renewal still echoes" % where)
        held.close()

        # Hostile peers end with a close; the server goes on.
        garbage = socket.create_connection(("127.0.0.1", port), timeout=10)
        garbage.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        check(closed_soon(garbage), "%s: garbage instead of a ClientHello is closed" % where)
        garbage.close()
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        check(closed_soon(silent), "%s: a silent peer is closed by the handshake timeout" % where)
        silent.close()
        with tls_connect(port, context) as sock:
            check(echo(sock, b"still") == b"still", "%s: served after hostile peers" % where)
    finally:
        stop(process, "tls_echo_server " + where)

    # TLS 1.2 refused when the server is told so.
    process, port = start(binary, loop_args + ["--cert=" + paths["first"][0],
                                               "--key=" + paths["first"][1], "--tls12=false"])
    try:
        try:
            with tls_connect(port, client_context(paths["ca"],
                                                  maximum_version=ssl.TLSVersion.TLSv1_2)):
                check(False, "%s: TLS 1.2 accepted with --tls12=false" % where)
        except ssl.SSLError as error:
            check("VERSION" in str(error).upper(), "%s: refusal names the version: %s"
                  % (where, error))
    finally:
        stop(process, "tls_echo_server --tls12=false " + where)


def s_client(port, ca, extra, stdin_lines):
    """Runs openssl s_client, feeding lines one at a time, each after the previous' echo."""
    process = subprocess.Popen(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", "localhost",
         "-verify_hostname", "localhost", "-CAfile", ca, "-verify_return_error"] + extra,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = b""
    try:
        for line in stdin_lines:
            process.stdin.write(line)
            process.stdin.flush()
            deadline = time.monotonic() + 10
            while line not in output and time.monotonic() < deadline:
                ready, _, _ = select.select([process.stdout], [], [], 0.5)
                if ready:
                    chunk = os.read(process.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    output += chunk
    finally:
        process.kill()
        process.wait()
    return output.decode(errors="replace")


def check_s_client(binary, paths, workdir):
    process, port = start(binary, ["--loops=1", "--cert=" + paths["first"][0],
                                   "--key=" + paths["first"][1]])
    session = os.path.join(workdir, "s_client.session")
    try:
        out = s_client(port, paths["ca"], ["-sess_out", session], [b"hello over s_client\n"])
        check("Verify return code: 0 (ok)" in out, "s_client verified the server: " + out[-2000:])
        check("TLSv1.3" in out, "s_client negotiated TLS 1.3")
        check(out.count("hello over s_client") >= 1, "s_client got its echo: " + out[-2000:])
        out = s_client(port, paths["ca"], ["-sess_in", session], [b"again\n"])
        check("Reused, TLSv1.3" in out, "s_client resumed its saved session: " + out[-2000:])
        check("again" in out, "s_client echo after resumption")
    finally:
        stop(process, "tls_echo_server for s_client")


def check_proxy(echo_binary, proxy_binary, paths):
    upstream, upstream_port = start(echo_binary, ["--loops=1", "--cert=" + paths["first"][0],
                                                  "--key=" + paths["first"][1]])
    # TLS in, TLS out: terminated from the client, originated (verified) to the echo server.
    both, both_port = start(proxy_binary, [
        "--loops=1", "--upstream=127.0.0.1:%d" % upstream_port, "--upstream_tls",
        "--upstream_ca=" + paths["ca"], "--upstream_server_name=localhost",
        "--tls_cert=" + paths["renewed"][0], "--tls_key=" + paths["renewed"][1]])
    # Plain in, TLS out.
    originate, originate_port = start(proxy_binary, [
        "--loops=1", "--upstream=127.0.0.1:%d" % upstream_port, "--upstream_tls",
        "--upstream_ca=" + paths["ca"], "--upstream_server_name=localhost"])
    # TLS out to a server whose name does not match: the client is reset with the reason.
    mismatch, mismatch_port = start(proxy_binary, [
        "--loops=1", "--upstream=127.0.0.1:%d" % upstream_port, "--upstream_tls",
        "--upstream_ca=" + paths["ca"], "--upstream_server_name=wrong.example"])
    try:
        with tls_connect(both_port, client_context(paths["ca"])) as sock:
            check(common_name(sock) == "renewed", "proxy terminates with its own certificate")
            payload = os.urandom(512 * 1024)
            check(echo(sock, payload) == payload, "proxy TLS -> TLS relays 512 KiB")
        with socket.create_connection(("127.0.0.1", originate_port), timeout=10) as sock:
            payload = os.urandom(512 * 1024)
            check(echo(sock, payload) == payload, "proxy plain -> TLS relays 512 KiB")
        with socket.create_connection(("127.0.0.1", mismatch_port), timeout=10) as sock:
            check(closed_soon(sock), "proxy closes a client whose upstream fails verification")
    finally:
        for process, name in ((both, "proxy tls->tls"), (originate, "proxy plain->tls"),
                              (mismatch, "proxy mismatch"), (upstream, "upstream")):
            stop(process, name)
    # A Unix path is no name to verify: refused at start, not by resetting every client.
    refused = subprocess.run(
        [proxy_binary, "--port=0", "--upstream=" + os.path.join(os.path.dirname(paths["ca"]),
                                                                "upstream.sock"),
         "--upstream_network=unix", "--upstream_tls", "--upstream_ca=" + paths["ca"]],
        capture_output=True, text=True, timeout=10)
    check(refused.returncode != 0 and "--upstream_server_name" in refused.stderr,
          "proxy refuses TLS to a Unix socket without --upstream_server_name: %d %s"
          % (refused.returncode, refused.stderr[-500:]))


def served_with_client_certificate(port, paths, certificate):
    """Whether a client presenting `certificate` (a (cert, key) pair, or None) gets an echo."""
    context = client_context(paths["ca"])
    if certificate is not None:
        context.load_cert_chain(*certificate)
    try:
        with tls_connect(port, context) as sock:
            # TLS 1.3: the handshake ends at the client before the server has checked its
            # certificate; a refusal arrives as an alert on the first read.
            return echo(sock, b"mutual") == b"mutual"
    except (ssl.SSLError, ConnectionError, socket.timeout):
        return False


def check_client_certificates(echo_binary, proxy_binary, paths):
    """--client_ca (tls_echo) and --tls_client_ca (proxy): a good, a missing and a wrong one."""
    server, port = start(echo_binary, ["--loops=1", "--cert=" + paths["first"][0],
                                       "--key=" + paths["first"][1],
                                       "--client_ca=" + paths["ca"]])
    upstream, upstream_port = start(echo_binary, ["--loops=1", "--cert=" + paths["first"][0],
                                                  "--key=" + paths["first"][1]])
    proxy, proxy_port = start(proxy_binary, [
        "--loops=1", "--upstream=127.0.0.1:%d" % upstream_port, "--upstream_tls",
        "--upstream_ca=" + paths["ca"], "--upstream_server_name=localhost",
        "--tls_cert=" + paths["renewed"][0], "--tls_key=" + paths["renewed"][1],
        "--tls_client_ca=" + paths["ca"]])
    try:
        for name, where in (("tls_echo --client_ca", port), ("proxy --tls_client_ca", proxy_port)):
            check(served_with_client_certificate(where, paths, paths["client"]),
                  name + ": a client certificate of the CA is served")
            check(not served_with_client_certificate(where, paths, None),
                  name + ": a client without a certificate is refused")
            check(not served_with_client_certificate(where, paths, paths["stranger"]),
                  name + ": a client certificate of another CA is refused")
    finally:
        for process, name in ((server, "tls_echo --client_ca"), (proxy, "proxy --tls_client_ca"),
                              (upstream, "upstream")):
            stop(process, name)


def main():
    echo_binary, proxy_binary = sys.argv[1], sys.argv[2]
    if shutil.which("openssl") is None:
        print("FAIL: openssl is not installed (tools/bazel installs Debian's openssl)")
        return 1
    with tempfile.TemporaryDirectory() as workdir:
        paths = make_certificates(workdir)
        for loop_args in (["--loops=1"], ["--loops=2", "--reuseport"]):
            check_server(echo_binary, paths, workdir, loop_args)
        check_s_client(echo_binary, paths, workdir)
        check_proxy(echo_binary, proxy_binary, paths)
        check_client_certificates(echo_binary, proxy_binary, paths)
    if FAILURES:
        print("%d checks failed" % len(FAILURES))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
