# Shared by the benchmark runners (echo_compare.sh, proxy_compare.sh): CPU time from
# /proc/PID/stat, JSON fields of echo_bench's output, medians, and the Markdown table of a
# results.tsv (name, label, round, msgs/s, bytes/s, p99 us, CPU ns/msg, ok) against its first
# label. Source it; it reads $results, $rounds and $clk_tck, and $subject names the first column.

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
seconds_of() { local d="$1"; d="${d%s}"; echo "$d"; }

json_field() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1"; }

median() {  # values on stdin
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Median of column $3 of results.tsv over the rounds of configuration $1, label $2.
column_median() { awk -F'\t' -v n="$1" -v l="$2" -v c="$3" '$1 == n && $2 == l { print $c }' "$results" | median; }

# Markdown table for configuration $1 against baseline label $2, and against the fastest row
# (bytes/s) and the row with the lowest CPU per message.
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
  echo "**$name** (medians of $rounds rounds)"
  echo
  echo "| ${subject:-server} | msgs/s | MiB/s | vs baseline | vs fastest | p99 us | p99 vs baseline | ${subject:-server} CPU ns/msg | vs baseline | vs lowest |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  while IFS= read -r label; do
    local rate bytes p99 cpu
    rate=$(column_median "$name" "$label" 4)
    bytes=$(column_median "$name" "$label" 5)
    p99=$(column_median "$name" "$label" 6)
    cpu=$(column_median "$name" "$label" 7)
    awk -v l="$label" -v r="$rate" -v b="$bytes" -v br="$base_rate" -v p="$p99" -v bp="$base_p99" \
      -v c="$cpu" -v bc="$base_cpu" -v fr="$best_rate" -v fc="$best_cpu" 'BEGIN {
        ratio = (br > 0) ? b / br : 0; cr = (bc > 0) ? c / bc : 0
        fratio = (fr > 0) ? b / fr : 0; fcr = (fc > 0) ? c / fc : 0
        p99 = (p > 0) ? sprintf("%.0f", p) : "-"; pr = (bp > 0) ? sprintf("%.2fx", p / bp) : "-"
        cpu = (c >= 100) ? sprintf("%.0f", c) : sprintf("%.2f", c)
        printf "| %s | %.0f | %.1f | %.3fx | %.3fx | %s | %s | %s | %.2fx | %.2fx |\n", l, r, b / 1048576, ratio, fratio, p99, pr, cpu, cr, fcr }'
  done < <(labels_of "$name")
}

labels_of() { awk -F'\t' -v n="$1" '$1 == n { print $2 }' "$results" | awk '!seen[$0]++'; }
names() { cut -f1 "$results" | awk '!seen[$0]++'; }

