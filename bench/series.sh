#!/bin/sh
# `make bench-series`: run the whole suite BENCH_RUNS times against the
# PostgreSQL that withpg.sh provides and summarise the targets' figures as
# median and range over the runs (this machine is shared and noisy: one run
# proves little). Writes build/bench/series/run-N.{md,tsv} and
# build/bench/series.md. BENCH_RUNS=0 summarises the runs already there.
set -eu
b=$1
runs=${2:-5}
out="$b/bench/series"
if [ "$runs" -gt 0 ]; then # 0: summarise the runs already in $out
    rm -rf "$out"
fi
mkdir -p "$out"
i=1
while [ "$i" -le "$runs" ]; do
    echo "== run $i of $runs"
    sh bench/run.sh "$b" >/dev/null
    cp "$b/bench/report.md" "$out/run-$i.md"
    cp "$b/bench/results.tsv" "$out/run-$i.tsv"
    i=$((i + 1))
done

# one "metric<TAB>value" line per figure and run
for f in "$out"/run-*.tsv; do
    awk -F'\t' '
        $1 == "reads" && $2 ~ /^floor: bare/ { fl[$3] = $4 }
        $1 == "reads" && $2 ~ /get_string/ { st[$3] = $4 }
        $1 == "reads" && $2 ~ /^old fixed: prepared/ { pr[$3] = $4 }
        $1 == "ratio" { r[$2] = $4 }
        $1 == "writes" && $2 == "set_int_us" { wr = $6 }
        $1 == "latency" && $2 ~ /^readable/ { split($3, k, "/"); p50[$3] = $4; p99[$3] = $5 }
        $1 == "coldstart" { pre = $4 }
        $1 == "memory" { mem = $4 }
        $1 == "tiers" && $3 == "floor" { tf[$2] = $4 }
        $1 == "tiers" && $3 == "cached" { tc[$2] = $4 }
        $1 == "tiers" && $3 == "old_prepared" { to[$2] = $4 }
        END {
            printf "01 cached get_string 1-thread time / floor time (<= 1.5x, aim 1.25x)\t%.2f\n", fl[1] / st[1]
            printf "02 cached 2 threads / 1 thread (>= 1.8x)\t%.2f\n", st[2] / st[1]
            printf "03 floor 2 threads / 1 thread (physical reference)\t%.2f\n", fl[2] / fl[1]
            printf "04 cached 2-thread scaling / floor scaling, %% (>= 90)\t%.0f\n", 100 * (st[2] / st[1]) / (fl[2] / fl[1])
            printf "05 cached 16 threads / 2 threads (>= 1.0x)\t%.2f\n", st[16] / st[2]
            printf "06 floor 16 threads / 2 threads (physical reference)\t%.2f\n", fl[16] / fl[2]
            printf "07 cached / prepared SELECT, 1 thread (>= 600x)\t%.0f\n", st[1] / pr[1]
            printf "08 floor / prepared SELECT, 1 thread (physical reference)\t%.0f\n", fl[1] / pr[1]
            printf "09 cached / prepared SELECT, 2 threads (>= 200x)\t%.0f\n", st[2] / pr[2]
            printf "10 floor / prepared SELECT, 2 threads (physical reference)\t%.0f\n", fl[2] / pr[2]
            printf "11 cached 1-thread time / same tables, no lock, no API\t%.2f\n", r["cached_over_same_tables_time_1t"]
            printf "12 set_int time / raw upsert (<= 1.15x)\t%.2f\n", wr
            printf "13 commit -> readable elsewhere p50 ms, 1000 writes/s, 1 listener (<= 0.5)\t%.2f\n", p50["1000/1"]
            printf "14 commit -> readable elsewhere p99 ms, 1000 writes/s, 1 listener (<= 2)\t%.2f\n", p99["1000/1"]
            printf "15 commit -> readable elsewhere p99 ms, 1000 writes/s, 32 listeners (<= 10)\t%.2f\n", p99["1000/32"]
            printf "16 commit -> readable elsewhere p99 ms, 100 writes/s, 32 listeners (<= 10)\t%.2f\n", p99["100/32"]
            printf "17 preload of 300,000 settings, ms (< 2000)\t%.0f\n", pre
            printf "18 memory per setting beyond key and value, bytes (<= 96)\t%.0f\n", mem
            for (t in tc) {
                printf "19 tier %4d experts: cached time / floor time\t%.2f\n", t, tf[t] / tc[t]
                printf "20 tier %4d experts: cached / prepared SELECT, 16 threads\t%.0f\n", t, tc[t] / to[t]
            }
        }' "$f"
done | sort -t "$(printf '\t')" -k1,1 -k2,2n | awk -F'\t' '
    function flush() {
        if (n == 0) return
        med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        sub(/^[0-9]+ /, "", name)
        printf "| %s | %g | %g - %g | %d |\n", name, med, v[1], v[n], n
    }
    BEGIN { print "| figure (target) | median | range | runs |"; print "| --- | --- | --- | --- |" }
    $1 != name { flush(); name = $1; n = 0 }
    { v[++n] = $2 + 0 }
    END { flush() }
' > "$out/summary.tmp"
{
    echo "# setcache benchmark series"
    echo
    echo "$(ls "$out"/run-*.tsv | wc -l) runs of the whole suite, $(date -u +%Y-%m-%dT%H:%M:%SZ), command: make bench-series"
    echo
    grep -m1 '^machine:' "$out/run-1.md" || true
    echo
    cat "$out/summary.tmp"
} > "$b/bench/series.md"
rm -f "$out/summary.tmp"
cat "$b/bench/series.md"
echo "series: $b/bench/series.md, runs: $out/"
