#!/usr/bin/env bash
# End to end: examples/dns answering dig (bind9-dnsutils) over UDP from examples/dns/example.zone,
# on 1 and 2 loops: A, AAAA, NS, SOA, ANY, case, NXDOMAIN, NODATA, an empty non-terminal,
# REFUSED outside the zone, TC past 512 bytes without EDNS0 and the whole answer with it, FORMERR
# for a malformed query and nothing for a datagram too short to answer, after which it still
# answers; then a clean exit on SIGTERM. Fails (does not skip) without dig.
set -uo pipefail

server=examples/dns/dns_server
zone=examples/dns/example.zone
command -v dig >/dev/null || { echo "FAIL: dig is missing (Debian bind9-dnsutils)"; exit 1; }
failures=0
server_pid=""
trap '[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null' EXIT

expect() {  # expect DESCRIPTION ACTUAL WANTED_REGEX
  if [[ "$2" =~ $3 ]]; then
    echo "ok: $1"
  else
    echo "FAIL: $1: wanted /$3/, got:"
    echo "$2"
    failures=$((failures + 1))
  fi
}

for loops in 1 2; do
  log="$TEST_TMPDIR/server.$loops.out"
  "$server" --zone="$zone" --port=0 --loops="$loops" >"$log" 2>&1 &
  server_pid=$!
  port=""
  for _ in $(seq 200); do
    port=$(sed -n 's/^listening on udp .*:\([0-9]*\)$/\1/p' "$log")
    [[ -n "$port" ]] && break
    sleep 0.05
  done
  [[ -n "$port" ]] || { echo "FAIL: the server did not start: $(cat "$log")"; exit 1; }
  q() { dig @127.0.0.1 -p "$port" +time=2 +tries=2 "$@" 2>&1; }

  expect "$loops loops: A" "$(q +short www.example.com A)" '^192\.0\.2\.1$'
  expect "$loops loops: AAAA" "$(q +short www.example.com AAAA)" '^2001:db8::1$'
  expect "$loops loops: NS" "$(q +short example.com NS | sort | tr '\n' ' ')" \
    '^ns1\.example\.com\. ns2\.example\.com\. $'
  expect "$loops loops: SOA" "$(q +short example.com SOA)" \
    '^ns1\.example\.com\. hostmaster\.example\.com\. 2026120701 7200 3600 1209600 300$'
  # dig asks ANY over TCP unless told; this server is UDP only.
  expect "$loops loops: ANY" "$(q +notcp +noall +answer www.example.com ANY | sort | tr '\t' ' ')" \
    '^www\.example\.com\. 300 IN AAAA 2001:db8::1.www\.example\.com\. 600 IN A 192\.0\.2\.1$'
  expect "$loops loops: TTL from the record" "$(q +noall +answer www.example.com A)" \
    'www\.example\.com\.[[:space:]]+600[[:space:]]+IN[[:space:]]+A[[:space:]]+192\.0\.2\.1'
  answer=$(q WwW.eXaMpLe.CoM A)
  expect "$loops loops: any case, authoritative" "$answer" 'flags: qr aa rd;.*ANSWER: 1'
  expect "$loops loops: the question as asked" "$answer" ';WwW\.eXaMpLe\.CoM\.'
  answer=$(q nope.example.com A)
  expect "$loops loops: NXDOMAIN with the SOA" "$answer" 'status: NXDOMAIN.*AUTHORITY: 1'
  expect "$loops loops: NODATA" "$(q v6only.example.com A)" \
    'status: NOERROR.*ANSWER: 0, AUTHORITY: 1'
  expect "$loops loops: empty non-terminal" "$(q b.example.com A)" 'status: NOERROR.*ANSWER: 0'
  expect "$loops loops: REFUSED outside the zone" "$(q example.org A)" 'status: REFUSED'
  answer=$(q +noedns +ignore big.example.com A)
  expect "$loops loops: truncated without EDNS0" "$answer" 'flags: qr aa tc rd;.*ANSWER: 0'
  expect "$loops loops: whole with EDNS0" \
    "$(q +bufsize=4096 +noall +answer big.example.com A | wc -l)" '^40$'

  # Malformed: two questions get FORMERR with the query's id; 5 bytes get nothing; the server
  # answers the next query as ever.
  reply=$(/usr/bin/python3 - "$port" <<'PYEOF'
import socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
two_questions = b"\xab\xcd\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00"
s.sendto(b"\x01\x02\x03\x04\x05", ("127.0.0.1", port))
s.sendto(two_questions, ("127.0.0.1", port))
data, _ = s.recvfrom(4096)
print("id=%s rcode=%d qr=%d" % (data[:2].hex(), data[3] & 15, data[2] >> 7))
try:
    more, _ = s.recvfrom(4096)
    print("unexpected reply:", more.hex())
except socket.timeout:
    print("nothing more")
PYEOF
  )
  expect "$loops loops: FORMERR for two questions, nothing for 5 bytes" "$reply" \
    '^id=abcd rcode=1 qr=1.nothing more$'
  expect "$loops loops: still answering" "$(q +short ns1.example.com A)" '^192\.0\.2\.53$'

  # Many clients (each dig its own source port, so both loops of two get some).
  many=0
  for i in $(seq 30); do
    [[ "$(q +short www.example.com A)" == "192.0.2.1" ]] && many=$((many + 1))
  done
  expect "$loops loops: 30 clients answered" "$many" '^30$'

  kill -TERM "$server_pid"
  wait "$server_pid"
  expect "$loops loops: clean exit on SIGTERM" "$?" '^0$'
  server_pid=""
done

echo "$failures failures"
exit "$failures"
