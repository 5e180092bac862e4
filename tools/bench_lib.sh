# Shared by the benchmark runners (echo_compare.sh, proxy_compare.sh, protocol_compare.sh,
# tls_compare.sh): CPU time from /proc/PID/stat, JSON fields of echo_bench's output, medians,
# and the Markdown table of a results.tsv (name, label, round, msgs/s, bytes/s, p99 us, CPU
# ns/msg, ok) against its first label; and for the runners that start servers by label
# (protocol_compare.sh, tls_compare.sh), the ports, the per-unit measurement and the
# alternating rounds. Source it; it reads $results, $rounds and $clk_tck, and $subject names
# the first column; `run` calls the runner's own start LABEL.

# utime + stime of one process: fields 14 and 15 of /proc/PID/stat, counted after the command
# name's closing parenthesis, since a name may hold spaces ("nsd: server 1").
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
seconds_of() { local d="$1"; d="${d%s}"; echo "$d"; }

json_field() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1"; }

median() {  # values on stdin
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Median of column $3 of results.tsv over the rounds of configuration $1, label $2.
column_median() { awk -F'\t' -v n="$1" -v l="$2" -v c="$3" '$1 == n && $2 == l { print $c }' "$results" | median; }

# Median over the rounds of label $2's column $4 divided by baseline $3's in the same round, in
# configuration $1. The servers alternate within each round, so a shared machine's slow spells
# (here rounds 15 to 40 % apart) fall on both sides of each ratio and cancel, which a ratio of
# the two medians does not do when the spells split the rounds unevenly.
paired_ratio() {
  awk -F'\t' -v n="$1" -v l="$2" -v b="$3" -v c="$4" '
    $1 == n && $2 == l { mine[$3] = $c }
    $1 == n && $2 == b { base[$3] = $c }
    END { for (r in mine) if ((r in base) && base[r] > 0) print mine[r] / base[r] }' "$results" |
    median
}

# Markdown table for configuration $1 against baseline label $2, and against the fastest row
# (bytes/s) and the row with the lowest CPU per message; the last column is the CPU ratio to
# the baseline paired by round (paired_ratio).
table() {
  local name="$1" base="$2"
  local base_rate base_p99 base_cpu best_rate best_cpu
  base_rate=$(column_median "$name" "$base" 5)
  base_p99=$(column_median "$name" "$base" 6)
  base_cpu=$(column_median "$name" "$base" 7)
  best_rate=0 best_cpu=0
  while IFS= read -r label; do
    local r c
    r=$(column_median "$name" "$label" 5)
    c=$(column_median "$name" "$label" 7)
    best_rate=$(awk -v a="$best_rate" -v b="$r" 'BEGIN { print (b > a) ? b : a }')
    best_cpu=$(awk -v a="$best_cpu" -v b="$c" 'BEGIN { print (a == 0 || (b > 0 && b < a)) ? b : a }')
  done < <(labels_of "$name")
  echo
  echo "**$name** (medians of $(rounds_of "$name") rounds)"
  echo
  echo "| ${subject:-server} | msgs/s | MiB/s | vs baseline | vs fastest | p99 us | p99 vs baseline | ${subject:-server} CPU ns/msg | vs baseline | vs lowest | vs baseline, paired by round |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  while IFS= read -r label; do
    local rate bytes p99 cpu paired
    rate=$(column_median "$name" "$label" 4)
    bytes=$(column_median "$name" "$label" 5)
    p99=$(column_median "$name" "$label" 6)
    cpu=$(column_median "$name" "$label" 7)
    paired=$(paired_ratio "$name" "$label" "$base" 7)
    awk -v l="$label" -v r="$rate" -v b="$bytes" -v br="$base_rate" -v p="$p99" -v bp="$base_p99" \
      -v c="$cpu" -v bc="$base_cpu" -v fr="$best_rate" -v fc="$best_cpu" -v pc="$paired" 'BEGIN {
        ratio = (br > 0) ? b / br : 0; cr = (bc > 0) ? c / bc : 0
        fratio = (fr > 0) ? b / fr : 0; fcr = (fc > 0) ? c / fc : 0
        p99 = (p > 0) ? sprintf("%.0f", p) : "-"; pr = (bp > 0) ? sprintf("%.2fx", p / bp) : "-"
        cpu = (c >= 100) ? sprintf("%.0f", c) : sprintf("%.2f", c)
        printf "| %s | %.0f | %.1f | %.3fx | %.3fx | %s | %s | %s | %.2fx | %.2fx | %.3fx |\n", l, r, b / 1048576, ratio, fratio, p99, pr, cpu, cr, fcr, pc }'
  done < <(labels_of "$name")
}

# The rows' own round count for configuration $1: a --render of an earlier run may have had
# other --rounds.
rounds_of() { awk -F'\t' -v n="$1" '$1 == n && !seen[$3]++ { count++ } END { print count + 0 }' "$results"; }
labels_of() { awk -F'\t' -v n="$1" '$1 == n { print $2 }' "$results" | awk '!seen[$0]++'; }
names() { cut -f1 "$results" | awk '!seen[$0]++'; }


# --- Servers started by label: the runner defines start LABEL (sets server_pid and port). ---

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_for_port() {  # $1 = port
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  return 1
}
# The server's processes: $1 and its children (nginx's worker is the master's child).
server_pids() { echo "$1" $(pgrep -P "$1" || true); }
server_cpu_ticks() {  # utime+stime of every thread of every process of the server
  local total=0 pid
  for pid in $(server_pids "$1"); do total=$((total + $(cpu_ticks "$pid" 2>/dev/null || echo 0))); done
  echo "$total"
}
context_switches() {  # voluntary and involuntary, every thread of every process of the server
  local pid
  for pid in $(server_pids "$1"); do cat /proc/"$pid"/task/*/status 2>/dev/null; done |
    awk '/^(voluntary|nonvoluntary)_ctxt_switches/ { n += $2 } END { print n + 0 }'
}
stop() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# cpus_idle_ticks LIST: "IDLE TOTAL" ticks summed over the CPUs of LIST ("0", "1-3", "1,3")
# from /proc/stat; idle counts iowait; total is user through steal (guest time is in user
# already). Ticks are 1/USER_HZ: a run of under a second gives the idle share to a few per cent.
cpus_idle_ticks() {
  awk -v list="$1" '
    BEGIN { n = split(list, parts, ",")
            for (i = 1; i <= n; i++) {
              if (split(parts[i], r, "-") == 2) { for (c = r[1]; c <= r[2]; c++) want["cpu" c] = 1 }
              else want["cpu" parts[i]] = 1 } }
    $1 in want { for (i = 2; i <= 9 && i <= NF; i++) total += $i; idle += $5 + $6 }
    END { print idle + 0, total + 0 }' /proc/stat
}

# measure NAME LABEL ROUND COMMAND...: runs the client command against the started server,
# which prints what it did and its rate as "COUNT RATE"; records a row of results.tsv (name,
# label, round, rate, server CPU us per unit, context switches per unit, and the idle share
# of the server's and of the client's CPUs over the client's run, from /proc/stat, when the
# runner pinned them to $server_cpus and $client_cpus). The idle shares say which side bounds
# the rate: a client with no idle left while the server's CPU has some means the rate is the
# client's. With tick-based CPU accounting (no IRQ time accounting), the server's CPU time
# includes the softirq work done in its threads' context: on loopback, the receive path of
# each segment it sends runs on its CPU and is charged to it.
measure() {
  local name="$1" label="$2" round="$3"
  shift 3
  local t0 c0 t1 c1 line server_idle0 client_idle0 server_idle1 client_idle1
  t0=$(server_cpu_ticks "$server_pid")
  c0=$(context_switches "$server_pid")
  # Read last before the client and first after it, so the script's own work stays out.
  [[ -n "${server_cpus:-}" ]] && server_idle0=$(cpus_idle_ticks "$server_cpus")
  [[ -n "${client_cpus:-}" ]] && client_idle0=$(cpus_idle_ticks "$client_cpus")
  line=$("$@")
  [[ -n "${server_cpus:-}" ]] && server_idle1=$(cpus_idle_ticks "$server_cpus")
  [[ -n "${client_cpus:-}" ]] && client_idle1=$(cpus_idle_ticks "$client_cpus")
  t1=$(server_cpu_ticks "$server_pid")
  c1=$(context_switches "$server_pid")
  local count="${line% *}" rate="${line#* }"
  awk -v n="$name" -v l="$label" -v r="$round" -v q="$rate" -v c="$count" -v t=$((t1 - t0)) \
    -v hz="$clk_tck" -v s=$((c1 - c0)) -v si0="${server_idle0:-}" -v si1="${server_idle1:-}" \
    -v ci0="${client_idle0:-}" -v ci1="${client_idle1:-}" '
    function idle_share(before, after,  b, a) {
      if (before == "" || after == "") return "-"
      split(before, b, " "); split(after, a, " ")
      return (a[2] > b[2]) ? sprintf("%.1f", 100 * (a[1] - b[1]) / (a[2] - b[2])) : "-"
    }
    BEGIN {
      printf "%s\t%s\t%d\t%.0f\t%.3f\t%.3f\t%s\t%s\n", n, l, r, q,
        (c > 0) ? t / hz * 1e6 / c : 0, (c > 0) ? s / c : 0, idle_share(si0, si1),
        idle_share(ci0, ci1) }' >>"$results"
  echo "  round $round $label: $rate /s" >&2
}

# run NAME CLIENT_FUNCTION ARGS -- LABEL...: $rounds rounds, the servers in order and in
# reverse order every other round; $current_label names the server being measured.
run() {
  local name="$1" client="$2" args=()
  shift 2
  while [[ "$1" != "--" ]]; do args+=("$1"); shift; done
  shift
  local labels=("$@")
  echo "== $name" >&2
  for ((round = 1; round <= rounds; round++)); do
    local order=("${labels[@]}")
    if ((round % 2 == 0)); then
      order=()
      for ((i = ${#labels[@]} - 1; i >= 0; i--)); do order+=("${labels[$i]}"); done
    fi
    for label in "${order[@]}"; do
      current_label="$label"
      start "$label"
      measure "$name" "$label" "$round" "$client" "${args[@]}"
      stop
    done
  done
}

# unit_tables COMMAND_LINE RATE CPU SWITCHES: per test of results.tsv, the Markdown table of
# the medians (rate, its ratio to the first server, server CPU us and context switches per
# unit, and, for rows that have them, the idle share of the server's and the client's CPUs),
# headed by the given column names; on stdout.
unit_tables() {
  local command_line="$1" rate_header="$2" cpu_header="$3" switches_header="$4"
  echo "Command: $command_line; rounds $rounds; $(nproc) CPUs, server pinned to CPU 0."
  local name base base_rate label
  while IFS= read -r name; do
    base=$(labels_of "$name" | head -1)
    base_rate=$(column_median "$name" "$base" 4)
    echo
    echo "**$name** (medians of $(rounds_of "$name") rounds)"
    echo
    echo "| server | $rate_header | vs $base | $cpu_header | $switches_header | server CPU idle | client CPUs idle |"
    echo "|---|---|---|---|---|---|---|"
    while IFS= read -r label; do
      awk -v l="$label" -v r="$(column_median "$name" "$label" 4)" -v b="$base_rate" \
        -v c="$(column_median "$name" "$label" 5)" -v s="$(column_median "$name" "$label" 6)" \
        -v si="$(column_median_or_dash "$name" "$label" 7)" \
        -v ci="$(column_median_or_dash "$name" "$label" 8)" '
        function pct(v) { return (v == "-") ? "-" : sprintf("%.0f%%", v) }
        BEGIN { printf "| %s | %.0f | %.2fx | %.2f | %.3f | %s | %s |\n", l, r,
                       (b > 0) ? r / b : 0, c, s, pct(si), pct(ci) }'
    done < <(labels_of "$name")
  done < <(names)
}

# Like column_median, over the rows that have the column: "-" when none has it (rows of an
# unpinned run, or of a results.tsv from before the column).
column_median_or_dash() {
  local values
  values=$(awk -F'\t' -v n="$1" -v l="$2" -v c="$3" '$1 == n && $2 == l && NF >= c && $c != "-" {
                                                      print $c }' "$results")
  if [[ -n "$values" ]]; then median <<<"$values"; else echo "-"; fi
}
