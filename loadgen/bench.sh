#!/bin/bash
# Runs every benchmark scenario against a demo API and an incsearchd that this script starts on
# free 127.0.0.1 ports, takes the median of BENCH_RUNS runs of each figure and writes
# BENCHMARKS.md. Usage: loadgen/bench.sh [BUILD_DIR]. It stops only the processes it started.
#
# Settings (environment): BENCH_RUNS (3), BENCH_OUT (BENCHMARKS.md), BENCH_HOLD_CLIENTS
# (20000), BENCH_INGEST_CLIENTS (64), BENCH_INGEST_S (5), BENCH_LATENCY_CLIENTS
# ("10 1000 10000"), BENCH_LATENCY_RATE (200 keystrokes/s), BENCH_LATENCY_S (5),
# BENCH_TYPING_CLIENTS (1000), BENCH_TYPING_S (15), BENCH_TYPING_DRAIN_S (30),
# BENCH_NOTE (a line of text for the report), BENCH_KEEP=1 keeps the logs. BENCH_REPORT_FROM=DIR
# rewrites the report from the logs a BENCH_KEEP=1 run kept in DIR, without running anything.
set -euo pipefail

B=${1:-build}
RUNS=${BENCH_RUNS:-3}
OUT=${BENCH_OUT:-BENCHMARKS.md}
HOLD_CLIENTS=${BENCH_HOLD_CLIENTS:-20000}
INGEST_CLIENTS=${BENCH_INGEST_CLIENTS:-64}
INGEST_S=${BENCH_INGEST_S:-5}
LATENCY_CLIENTS=${BENCH_LATENCY_CLIENTS:-10 1000 10000}
LATENCY_RATE=${BENCH_LATENCY_RATE:-200}
LATENCY_S=${BENCH_LATENCY_S:-5}
TYPING_CLIENTS=${BENCH_TYPING_CLIENTS:-1000}
TYPING_S=${BENCH_TYPING_S:-15}
TYPING_DRAIN_S=${BENCH_TYPING_DRAIN_S:-30}
MAX_CLIENTS=20000 # slots in every incsearchd the bench starts
HOLD_PROCESSES=3  # each process of the load generator is under the same open-file limit

BIN=$(cd "$B" && pwd)
LG=$BIN/incsearch-loadgen
WORK=${BENCH_REPORT_FROM:-$(mktemp -d /tmp/incsearchd-bench-XXXXXX)}
RESULTS=$WORK/results
STARTED=() # pids of every process this script started
BENCH_START=$(date +%s)
mkdir -p "$RESULTS"

bench_cleanup() {
        for pid in "${STARTED[@]}"; do
                kill -TERM "$pid" 2>/dev/null || true
        done
        sleep 0.5
        for pid in "${STARTED[@]}"; do
                kill -KILL "$pid" 2>/dev/null || true
        done
        if [ "${BENCH_KEEP:-0}" = 1 ] || [ -n "${BENCH_REPORT_FROM:-}" ]; then
                echo "bench: logs kept in $WORK" >&2
        else
                rm -rf "$WORK"
        fi
}
trap bench_cleanup EXIT

log() {
        echo "bench: $*" >&2
}

# value KEY FILE: the value of the last KEY=value line in FILE.
value() {
        sed -n "s/^$1=//p" "$2" | tail -n 1
}

# record NAME VALUE: adds one run's figure to the list behind a median.
record() {
        echo "$2" >>"$RESULTS/$1"
}

# median NAME: the median of the recorded runs, or "n/a".
median() {
        if [ ! -s "$RESULTS/$1" ]; then
                echo "n/a"
                return
        fi
        sort -g "$RESULTS/$1" | awk '{v[NR] = $1} END {
                if (NR % 2) print v[(NR + 1) / 2]; else printf "%.10g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# runs NAME: every run's value, comma-separated.
runs() {
        if [ -s "$RESULTS/$1" ]; then paste -sd, "$RESULTS/$1" | sed 's/,/, /g'; else echo "n/a"; fi
}

# Waits until process PID has exited, at most 10 s, then kills it.
stop_pid() {
        local pid=$1
        kill -TERM "$pid" 2>/dev/null || return 0
        for _ in $(seq 100); do
                kill -0 "$pid" 2>/dev/null || return 0
                sleep 0.1
        done
        log "process $pid did not stop within 10 s of SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
}

# start NAME PORT PROGRAM ARG...: starts PROGRAM, waits for PORT and sets STARTED_PID and
# STARTUP_MS. The log goes to $WORK/NAME.log.
start() {
        local name=$1 port=$2 out=$WORK/$1.start
        shift 2
        if ! timeout 15 "$LG" startup -p "$port" -- "$@" >"$out" 2>>"$WORK/$name.log"; then
                tail -n 20 "$WORK/$name.log" >&2
                log "$name did not start; its log is above"
                exit 1
        fi
        STARTED_PID=$(value pid "$out")
        STARTUP_MS=$(value startup_ms "$out")
        STARTED+=("$STARTED_PID")
}

# start_api NAME RATE BURST: starts the demo API on a free port and sets API_PORT and API_PID.
start_api() {
        API_PORT=$("$LG" port)
        start "$1" "$API_PORT" "$BIN/incsearch-demo-api" -l "127.0.0.1:$API_PORT" -r "$2" -b "$3"
        API_PID=$STARTED_PID
}

# start_daemon NAME API_URL RATE BURST: starts incsearchd on a free port and sets PORT and
# DAEMON_PID.
start_daemon() {
        local conf=$WORK/$1.conf
        PORT=$("$LG" port)
        cat >"$conf" <<EOF
[server]
listen = 127.0.0.1:$PORT
max_connections = $MAX_CLIENTS
# The hold scenario opens every connection at once, and the reconnect-storm limit would turn
# most of them away. So it is off here: 0 means no limit.
max_new_connections_per_second = 0
shm_name = /incsearchd-bench-$$
log_level = info
[api]
url = $2
rate = $3
burst = $4
[workers]
workers = 2
# The result cache is off: these scenarios measure the path through the API, and the cache
# would answer repeated place names without a call. make bench-cache measures the cache.
[cache]
max_bytes = 0
EOF
        start "$1" "$PORT" "$BIN/incsearchd" -c "$conf"
        DAEMON_PID=$STARTED_PID
}

# memory PID PREFIX: records the process's memory in KiB as PREFIX_rss and so on.
memory() {
        local pid=$1 prefix=$2
        echo "${prefix}_rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")"
        echo "${prefix}_rss_anon=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status")"
        echo "${prefix}_rss_shmem=$(awk '/^RssShmem:/ {print $2}' "/proc/$pid/status")"
        echo "${prefix}_pss=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")"
        echo "${prefix}_pss_anon=$(awk '/^Pss_Anon:/ {print $2}' "/proc/$pid/smaps_rollup")"
        echo "${prefix}_pss_shmem=$(awk '/^Pss_Shmem:/ {print $2}' "/proc/$pid/smaps_rollup")"
        # Pages of TCP buffers of the whole machine, both ends of every loopback connection.
        echo "${prefix}_tcp_mem_pages=$(awk '/^TCP:/ {for (i = 1; i < NF; i++) if ($i == "mem") print $(i + 1)}' /proc/net/sockstat)"
}

# per_connection FILE KEY HELD: bytes per connection of the KiB growth of KEY.
per_connection() {
        awk -v a="$(value "before_$2" "$1")" -v b="$(value "after_$2" "$1")" -v n="$3" \
                'BEGIN { if (n > 0) printf "%.0f\n", (b - a) * 1024 / n; else print "n/a" }'
}

hold_run() {
        local run=$1 file=$WORK/hold-$run.txt per=$(((HOLD_CLIENTS + HOLD_PROCESSES - 1) / HOLD_PROCESSES))
        local pids=() held=0 ready

        start_daemon "hold-daemon-$run" "http://127.0.0.1:$API_PORT/search?q={q}&limit=10" 10 10
        record startup_ms "$STARTUP_MS"
        sleep 0.5
        memory "$DAEMON_PID" before >"$file"
        for i in $(seq 0 $((HOLD_PROCESSES - 1))); do
                # Each process takes its own 80 source addresses, 127.0.0.(2 + 80 i) and up.
                timeout 300 "$LG" hold -p "$PORT" -n "$per" -S $((2 + i * 80)) -s 80 -d 240 \
                        >"$WORK/hold-$run-$i.out" 2>>"$WORK/hold-$run-$i.log" &
                pids+=($!)
                STARTED+=($!)
        done
        for _ in $(seq 240); do
                ready=$(cat "$WORK"/hold-"$run"-*.out 2>/dev/null | grep -c '^ready$' || true)
                [ "$ready" -ge "$HOLD_PROCESSES" ] && break
                sleep 0.5
        done
        sleep 1
        memory "$DAEMON_PID" after >>"$file"
        echo "daemon_fds=$(find "/proc/$DAEMON_PID/fd" -mindepth 1 | wc -l)" >>"$file"
        for i in $(seq 0 $((HOLD_PROCESSES - 1))); do
                held=$((held + $(value held "$WORK/hold-$run-$i.out")))
        done
        echo "held=$held" >>"$file"
        for pid in "${pids[@]}"; do
                stop_pid "$pid"
        done
        stop_pid "$DAEMON_PID"

        record held "$held"
        record daemon_fds "$(value daemon_fds "$file")"
        record nofile_hard "$(grep -o 'hard [0-9]*' "$WORK/hold-daemon-$run.log" | tail -n 1 | cut -d' ' -f2 || true)"
        record heap_per_conn "$(per_connection "$file" rss_anon "$held")"
        record pss_anon_per_conn "$(per_connection "$file" pss_anon "$held")"
        record shm_per_conn "$(per_connection "$file" rss_shmem "$held")"
        record rss_per_conn "$(per_connection "$file" rss "$held")"
        record pss_per_conn "$(per_connection "$file" pss "$held")"
        record tcp_per_conn "$(awk -v a="$(value before_tcp_mem_pages "$file")" \
                -v b="$(value after_tcp_mem_pages "$file")" -v n="$held" \
                'BEGIN { if (n > 0) printf "%.0f\n", (b - a) * 4096 / n; else print "n/a" }')"
        record rss_base_kib "$(value before_rss "$file")"
        record accept_pauses "$(grep -c 'pausing accept' "$WORK/hold-daemon-$run.log" || true)"
        log "hold run $run: held $held, startup $STARTUP_MS ms"
}

ingest_run() {
        local run=$1 out=$WORK/ingest-$run.out kind=$2
        timeout 180 "$LG" ingest -p "$PORT" -P "$DAEMON_PID" -n "$INGEST_CLIENTS" -d "$INGEST_S" \
                -f "$kind" >"$out" 2>>"$WORK/ingest.log"
        record "ingest_${kind}_per_cpu" "$(value frames_per_daemon_cpu_s "$out")"
        record "ingest_${kind}_per_s" "$(value frames_per_s "$out")"
        record "ingest_${kind}_cpu_per_million" "$(value daemon_cpu_s_per_million "$out")"
        log "ingest $kind run $run: $(value frames_per_daemon_cpu_s "$out") frames per daemon CPU second"
}

# profile_start NAME PID SECONDS: starts perf sampling PID for SECONDS in the background, when
# perf works here. The caller runs the load meanwhile.
profile_start() {
        PROFILE_PID=""
        if perf stat -e instructions true >/dev/null 2>&1; then
                perf record -F 997 -o "$WORK/$1.perf" -p "$2" -- sleep "$3" \
                        >/dev/null 2>>"$WORK/perf.log" &
                PROFILE_PID=$!
                STARTED+=("$PROFILE_PID")
        fi
}

# profile_top PERF_DATA COUNT [PERF_OPTION...]: the COUNT symbols with the most samples of
# their own.
profile_top() {
        local data=$1 count=$2
        shift 2
        # awk reads to the end, so perf never gets SIGPIPE, which pipefail would turn into a failure.
        perf report -i "$data" --stdio --no-children --sort dso,symbol -g none "$@" 2>/dev/null |
                awk -v n="$count" '/^ +[0-9.]+%/ && ++shown <= n {
                        for (i = 2; i < NF; i++)
                                if ($i == "[.]" || $i == "[k]")
                                        printf "%8s  %-24s %s\n", $1, (i > 2 ? $(i - 1) : ""), $(i + 1)
                }'
}

# profile_report NAME: the top of the profile overall and in incsearchd's own code, in Markdown.
profile_report() {
        if [ -s "$WORK/$1.perf" ]; then
                echo '```'
                profile_top "$WORK/$1.perf" 15
                echo '```'
                echo
                echo "The same samples, only incsearchd's own functions:"
                echo
                echo '```'
                profile_top "$WORK/$1.perf" 8 --dsos incsearchd
                echo '```'
        else
                echo "(no profile: \`perf stat -e instructions true\` failed on this machine)"
        fi
}

latency_run() {
        local clients=$1 run=$2 out=$WORK/latency-$1-$2.out
        timeout 180 "$LG" latency -p "$PORT" -a "$LATENCY_API_PORT" -n "$clients" \
                -r "$LATENCY_RATE" -d "$LATENCY_S" >"$out" 2>>"$WORK/latency.log"
        for key in key_to_request response_to_client round_trip; do
                for q in p50 p99 max; do
                        record "lat_${clients}_${key}_${q}" "$(value "${key}_${q}_us" "$out")"
                done
        done
        record "lat_${clients}_lost" "$(($(value lost "$out") + $(value errors "$out")))"
        log "latency $clients clients run $run: key-to-request p99 $(value key_to_request_p99_us "$out") us"
}

typing_run() {
        local run=$1 out=$WORK/typing-$1.out
        start_api "typing-api-$run" 50 10
        start_daemon "typing-daemon-$run" "http://127.0.0.1:$API_PORT/search?q={q}&limit=10" 50 10
        timeout 300 "$LG" typing -p "$PORT" -A "$API_PORT" -n "$TYPING_CLIENTS" -k 8 \
                -d "$TYPING_S" -w "$TYPING_DRAIN_S" >"$out" 2>>"$WORK/typing.log"
        stop_pid "$DAEMON_PID"
        stop_pid "$API_PID"
        for key in api_calls_per_word words_typed words_unanswered stale_after_fresh \
                api_violations last_query_wait_p50_us last_query_wait_p99_us \
                last_query_wait_max_us word_errors; do
                record "typing_$key" "$(value "$key" "$out")"
        done
        log "typing run $run: $(value api_calls_per_word "$out") API calls per word, $(value api_violations "$out") over the limit"
}

# verdict VALUE OP TARGET: "met" or "missed" (OP is le or ge), or "n/a".
verdict() {
        awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
                if (v == "n/a" || v == "") { print "n/a"; exit }
                if ((op == "le" && v + 0 <= t + 0) || (op == "ge" && v + 0 >= t + 0)) print "met"; else print "missed" }'
}

# ratio A B: A / B with two decimals.
ratio() {
        awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'
}

us_to_ms() {
        awk -v v="$1" 'BEGIN { if (v == "n/a") print v; else printf "%.3f\n", v / 1000 }'
}

# --- run every scenario ---
run_all() {
        BENCH_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
        LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

        # The fast API: the demo API with its limit raised to its maximum.
        start_api fast-api 1000000 1000000

        log "hold: $HOLD_CLIENTS idle clients from $HOLD_PROCESSES processes, $RUNS runs"
        for run in $(seq "$RUNS"); do
                hold_run "$run"
        done

        log "ingest: $INGEST_CLIENTS clients for $INGEST_S s, JSON and plain-text frames, $RUNS runs each"
        start_daemon ingest-daemon "http://127.0.0.1:$API_PORT/search?q={q}&limit=10" 1000 100
        for run in $(seq "$RUNS"); do
                ingest_run "$run" json
                ingest_run "$run" text
        done
        profile_start ingest "$DAEMON_PID" "$INGEST_S"
        timeout 180 "$LG" ingest -p "$PORT" -P "$DAEMON_PID" -n "$INGEST_CLIENTS" -d "$INGEST_S" \
                -f json >"$WORK/ingest-profile.out" 2>>"$WORK/ingest.log"
        [ -n "$PROFILE_PID" ] && wait "$PROFILE_PID" || true
        stop_pid "$DAEMON_PID"
        stop_pid "$API_PID"

        for clients in $LATENCY_CLIENTS; do
                log "latency: $clients clients, $LATENCY_RATE keystrokes/s for $LATENCY_S s, $RUNS runs"
                LATENCY_API_PORT=$("$LG" port)
                start_daemon "latency-daemon-$clients" \
                        "http://127.0.0.1:$LATENCY_API_PORT/search?q={q}&limit=10" 1000000 1000000
                for run in $(seq "$RUNS"); do
                        latency_run "$clients" "$run"
                done
                stop_pid "$DAEMON_PID"
        done

        log "fairness: $TYPING_CLIENTS clients typing at 8 keys/s against 50 calls/s, $RUNS runs"
        for run in $(seq "$RUNS"); do
                typing_run "$run"
        done

        LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
        DURATION=$(($(date +%s) - BENCH_START))
        printf 'BENCH_DATE="%s"\nDURATION=%s\nLOAD_BEFORE="%s"\nLOAD_AFTER="%s"\n' "$BENCH_DATE" \
                "$DURATION" "$LOAD_BEFORE" "$LOAD_AFTER" >"$RESULTS/meta"
}

if [ -z "${BENCH_REPORT_FROM:-}" ]; then
        run_all
fi
. "$RESULTS/meta"

# --- write the report ---
STARTUP=$(median startup_ms)
HELD=$(median held)
NOFILE=$(median nofile_hard)
HEAP=$(median heap_per_conn)
RSS_CONN=$(median rss_per_conn)
SHM_CONN=$(median shm_per_conn)
RSS_BASE=$(median rss_base_kib)
PROJECTED=$(awk -v base="$RSS_BASE" -v per="$RSS_CONN" \
        'BEGIN { if (per == "n/a") print "n/a"; else printf "%.0f\n", (base * 1024 + per * 100000) / 1048576 }')
INGEST=$(median ingest_json_per_cpu)
INGEST_TEXT=$(median ingest_text_per_cpu)
BIG=$(echo "$LATENCY_CLIENTS" | awk '{print $NF}')
K2R=$(us_to_ms "$(median "lat_${BIG}_key_to_request_p99")")
R2C=$(us_to_ms "$(median "lat_${BIG}_response_to_client_p99")")
STALE=$(median typing_stale_after_fresh)
VIOLATIONS=$(median typing_api_violations)
RESERVE=34 # incsearchd's documented reserve: 32 descriptors and one per worker (2 here)

report_header() {
        cat <<END
# Benchmarks

Written by \`make bench\` (\`loadgen/bench.sh\`), started on $BENCH_DATE; the run took
$DURATION s. Each figure is the median of $RUNS runs; the Runs columns list every run.

## Machine and command

- CPU: $(lscpu | awk -F': *' '/^Model name:/ && !seen++ {print $2}'), $(nproc) cores online
- Memory: $(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo); kernel $(uname -r); $(. /etc/os-release && echo "$PRETTY_NAME")
- Command: \`make bench\` with BENCH_RUNS=$RUNS BENCH_HOLD_CLIENTS=$HOLD_CLIENTS
  BENCH_INGEST_CLIENTS=$INGEST_CLIENTS BENCH_INGEST_S=$INGEST_S
  BENCH_LATENCY_CLIENTS="$LATENCY_CLIENTS" BENCH_LATENCY_RATE=$LATENCY_RATE
  BENCH_LATENCY_S=$LATENCY_S BENCH_TYPING_CLIENTS=$TYPING_CLIENTS BENCH_TYPING_S=$TYPING_S
  BENCH_TYPING_DRAIN_S=$TYPING_DRAIN_S
- Load average (1, 5, 15 min) at the start: $LOAD_BEFORE; at the end: $LOAD_AFTER. The load
  generator, incsearchd, its 2 workers and the API share these cores with anything else running.
- incsearchd runs with its result cache off (\`[cache] max_bytes = 0\`), so every figure below
  measures the path through the API; \`make bench-cache\` measures the cache on its own.
END
        if [ -n "${BENCH_NOTE:-}" ]; then
                echo "- Note: $BENCH_NOTE"
        fi
}

report_summary() {
        cat <<END

## Summary

The Node.js column compares with a typical implementation on the npm ws package measured on this
kind of machine: 6.6 KiB per idle connection and 0.77 million small query frames per second on
one core. It added 2 to 8 ms at p99.

| Figure | Target | Median | Verdict | Against Node.js |
| --- | --- | --- | --- | --- |
| idle connections held, hard open-file limit $NOFILE | all but a reserve of at most $RESERVE | $HELD | $(verdict "$HELD" ge $((${NOFILE:-20000} - RESERVE))) | |
| incsearchd heap per idle connection (RssAnon growth) | at most 2048 bytes | $HEAP bytes | $(verdict "$HEAP" le 2048) | |
| incsearchd RSS per idle connection, heap and shared slot | none | $RSS_CONN bytes | | $(ratio 6758 "$RSS_CONN") times smaller |
| projected RSS with 100,000 idle connections | none | $PROJECTED MiB | | |
| startup with $MAX_CLIENTS slots, exec to accepting | under 100 ms | $STARTUP ms | $(verdict "$STARTUP" le 100) | |
| JSON query frames per incsearchd CPU second | at least 3,000,000 | $INGEST | $(verdict "$INGEST" ge 3000000) | $(ratio "$INGEST" 770000) times as many |
| keystroke to API request, p99, $BIG clients | under 1 ms | $K2R ms | $(verdict "$K2R" le 1) | |
| API response to client frame, p99, $BIG clients | under 1 ms | $R2C ms | $(verdict "$R2C" le 1) | |
| stale results after a fresher one | 0 | $STALE | $(verdict "$STALE" le 0) | |
| API calls over its limit | 0 | $VIOLATIONS | $(verdict "$VIOLATIONS" le 0) | |

incsearchd documents a reserve of 32 descriptors and one per worker, $RESERVE here, below the
open-file limit (the default of max_connections). The bench sets max_connections above that, so
the open-file limit itself stops it, and a gap of more than $RESERVE below the limit counts as
missed.
END
}

report_hold() {
        cat <<END

## hold: idle connections and memory

$HOLD_PROCESSES load-generator processes open $HOLD_CLIENTS WebSocket connections in total from
source addresses 127.0.0.2 to 127.0.0.241 to one incsearchd with max_connections = $MAX_CLIENTS and no limit on new connections per second, and
keep them idle. Memory comes from /proc/PID/status and /proc/PID/smaps_rollup, read before and
after the connections open and divided by the connections held. Kernel TCP memory is the growth
of the machine-wide "TCP mem" pages in /proc/net/sockstat, for both ends of each connection.

| Figure | Median | Runs |
| --- | --- | --- |
| open-file limit (hard), from incsearchd's log | $NOFILE | $(runs nofile_hard) |
| connections held | $HELD | $(runs held) |
| "pausing accept" warnings logged at the limit | $(median accept_pauses) | $(runs accept_pauses) |
| startup, ms | $STARTUP | $(runs startup_ms) |
| RSS before connections, KiB | $RSS_BASE | $(runs rss_base_kib) |
| heap per connection, RssAnon, bytes | $HEAP | $(runs heap_per_conn) |
| heap per connection, Pss_Anon, bytes | $(median pss_anon_per_conn) | $(runs pss_anon_per_conn) |
| shared segment per connection, RssShmem, bytes | $SHM_CONN | $(runs shm_per_conn) |
| RSS per connection, heap and shared segment, bytes | $RSS_CONN | $(runs rss_per_conn) |
| PSS per connection, bytes | $(median pss_per_conn) | $(runs pss_per_conn) |
| kernel TCP memory per connection, both ends, bytes | $(median tcp_per_conn) | $(runs tcp_per_conn) |

The projection for 100,000 connections is the RSS before connections plus 100,000 times the RSS
per connection. It leaves out kernel socket memory.
END
}

report_ingest() {
        cat <<END

## ingest: query frames per core

$INGEST_CLIENTS connections each write masked query frames as fast as the socket takes them for
$INGEST_S s, in blocks of 256 frames that each end with a ping, with at most 4 blocks per
connection waiting for their pong. incsearchd sends pongs in order, so a pong means it has read
that block, and only such frames count. Frames per CPU second divide them by incsearchd's
utime + stime (/proc/PID/stat) from the first frame to the last pong. JSON frames are \`{"q":"swi","seq":N}\` (28 bytes), as the demo
page sends them; plain-text frames are \`swi\`. The API is the demo API with its limit raised,
and incsearchd's bucket is 1000 calls/s, so the workers keep working at a small rate.

| Figure | Median | Runs |
| --- | --- | --- |
| JSON frames per incsearchd CPU second | $INGEST | $(runs ingest_json_per_cpu) |
| JSON frames per second, wall clock | $(median ingest_json_per_s) | $(runs ingest_json_per_s) |
| incsearchd CPU seconds per million JSON frames | $(median ingest_json_cpu_per_million) | $(runs ingest_json_cpu_per_million) |
| plain-text frames per incsearchd CPU second | $INGEST_TEXT | $(runs ingest_text_per_cpu) |
| plain-text frames per second, wall clock | $(median ingest_text_per_s) | $(runs ingest_text_per_s) |
| incsearchd CPU seconds per million plain-text frames | $(median ingest_text_cpu_per_million) | $(runs ingest_text_cpu_per_million) |

Profile of incsearchd during one more JSON run (perf record at 997 Hz; the share of samples in
each function itself, without its callees):

END
        profile_report ingest
}

report_latency() {
        cat <<END

## latency: added time with tokens to spare

The load generator is also the API: it answers each request at once, so keystroke-to-request
(keystroke frame written to request received) and response-to-client (response written to result
frame received) are read from one clock. incsearchd's bucket is 1,000,000 calls/s. Keystrokes go
at $LATENCY_RATE per second for $LATENCY_S s, each from a client with no query outstanding.
Times are in ms. "Lost" counts queries without a result within 5 s, and errors.

| Clients | Keystroke to request p50 / p99 / max | Response to client p50 / p99 / max | Round trip p50 / p99 / max | Lost |
| --- | --- | --- | --- | --- |
END
        for clients in $LATENCY_CLIENTS; do
                local row="| $clients"
                for key in key_to_request response_to_client round_trip; do
                        row="$row | $(us_to_ms "$(median "lat_${clients}_${key}_p50")") / $(us_to_ms "$(median "lat_${clients}_${key}_p99")") / $(us_to_ms "$(median "lat_${clients}_${key}_max")")"
                done
                echo "$row | $(median "lat_${clients}_lost") |"
        done
        cat <<END

The p99 of each run at $BIG clients, in us: keystroke to request $(runs "lat_${BIG}_key_to_request_p99");
response to client $(runs "lat_${BIG}_response_to_client_p99").
END
}

report_fairness() {
        cat <<END

## fairness and freshness

$TYPING_CLIENTS clients type place names at 8 keys per second, so a word's keys are 125 ms apart.
After a word's last key a client waits for that query's result, pauses 250 to 750 ms and types
the next word. Clients start new words for $TYPING_S s and then have up to $TYPING_DRAIN_S s to
get their last results. incsearchd's bucket and the demo API's limit are both 50 calls/s with a
burst of 10. API calls and calls over the limit come from the demo API's /stats.

| Figure | Median | Runs |
| --- | --- | --- |
| words typed | $(median typing_words_typed) | $(runs typing_words_typed) |
| API calls per typed word | $(median typing_api_calls_per_word) | $(runs typing_api_calls_per_word) |
| wait of a word's last query, p50, ms | $(us_to_ms "$(median typing_last_query_wait_p50_us)") | $(runs typing_last_query_wait_p50_us) (us) |
| wait of a word's last query, p99, ms | $(us_to_ms "$(median typing_last_query_wait_p99_us)") | $(runs typing_last_query_wait_p99_us) (us) |
| wait of a word's last query, max, ms | $(us_to_ms "$(median typing_last_query_wait_max_us)") | $(runs typing_last_query_wait_max_us) (us) |
| words whose last query got an error | $(median typing_word_errors) | $(runs typing_word_errors) |
| words still without their last result at the end | $(median typing_words_unanswered) | $(runs typing_words_unanswered) |
| stale results after a fresher one | $STALE | $(runs typing_stale_after_fresh) |
| API calls over its limit (429) | $VIOLATIONS | $(runs typing_api_violations) |

Demand is far above supply here: $TYPING_CLIENTS clients waiting for one word each share 50
calls/s, so once all of them wait, the queue alone sets a last query's wait near
$TYPING_CLIENTS / 50 s.
END
}

# The measured facts next to each missed target.
report_misses() {
        local any=0
        echo
        echo "## Missed targets and what the measurements show"
        echo
        if [ "$(verdict "$HELD" ge $((${NOFILE:-20000} - RESERVE)))" = missed ]; then
                echo "- Connections: $HELD held with a hard limit of $NOFILE; incsearchd had $(median daemon_fds) descriptors open at the limit."
                any=1
        fi
        if [ "$(verdict "$HEAP" le 2048)" = missed ]; then
                echo "- Heap: $HEAP bytes of RssAnon per idle connection, on top of $SHM_CONN bytes of shared segment. This bench does not break the heap down by allocation."
                any=1
        fi
        if [ "$(verdict "$STARTUP" le 100)" = missed ]; then
                echo "- Startup: $STARTUP ms from exec to an accepted connect, runs $(runs startup_ms)."
                any=1
        fi
        if [ "$(verdict "$INGEST" ge 3000000)" = missed ]; then
                echo "- Ingest: $INGEST JSON frames per CPU second against $INGEST_TEXT for plain-text frames, so the JSON path costs $(ratio "$INGEST_TEXT" "$INGEST") times as much CPU per frame. The functions with the most samples:"
                if [ -s "$WORK/ingest.perf" ]; then
                        profile_top "$WORK/ingest.perf" 6 | awk '{ printf "  %s in %s (%s);", $1, $3, $2 } END { print "" }'
                fi
                any=1
        fi
        if [ "$(verdict "$K2R" le 1)" = missed ] || [ "$(verdict "$R2C" le 1)" = missed ]; then
                echo "- Latency at $BIG clients: p99 of each run, keystroke to request $(runs "lat_${BIG}_key_to_request_p99") us, response to client $(runs "lat_${BIG}_response_to_client_p99") us. The load generator, incsearchd and its workers share $(nproc) cores, and the load average was $LOAD_BEFORE at the start."
                any=1
        fi
        if [ "$(verdict "$STALE" le 0)" = missed ]; then
                echo "- Freshness: $STALE results for an older query arrived after one for a newer query, runs $(runs typing_stale_after_fresh)."
                any=1
        fi
        if [ "$(verdict "$VIOLATIONS" le 0)" = missed ]; then
                echo "- API limit: calls over the limit $VIOLATIONS, runs $(runs typing_api_violations). incsearchd's bucket equals the API's limit (50/s, burst 10) here, with no margin. The time from taking a token to the request reaching the API varies from call to call, so two requests can reach the API closer together than their tokens were taken, and the API rejects the second."
                any=1
        fi
        if [ "$any" = 0 ]; then
                echo "None."
        fi
}

# report_limits: what bounds each figure, from the measurements and the code.
report_limits() {
        cat <<END

## What limits each figure

- Connections: the hard open-file limit. incsearchd holds $HELD of $NOFILE; the rest are its
  own descriptors: the listener, the control socket, one socket per worker, the standard
  streams and the event loop's own.
- Heap per idle connection: struct client is 232 bytes (sizeof on x86_64 in this version); the rest of the
  $HEAP bytes is libevent's bufferevent with its two evbuffers and events, and malloc's
  overhead. Empty evbuffers hold no data chunk, so an idle connection carries no buffer.
- Ingest: incsearchd's CPU per frame, in the functions of the profile under ingest below:
  unmasking, the frame parser, UTF-8 checking and the parser of the common {"q","seq"} shape,
  plus the kernel's TCP receive path. Only the newest query of each read reaches the cache and
  the shared-memory lock, so json-c and the lock are not in the top entries.
- Latency: with tokens to spare, the p99 is set by scheduling on $(nproc) cores shared by the
  load generator, incsearchd and its workers, not by a queue in incsearchd.
- Fairness: the API's rate. With all $TYPING_CLIENTS clients waiting for a word at 50 calls/s,
  a last query waits about $TYPING_CLIENTS / 50 s in the FIFO at most.
END
}

{
        report_header
        report_summary
        report_misses
        report_limits
        report_hold
        report_ingest
        report_latency
        report_fairness
} >"$OUT"
log "wrote $OUT in $DURATION s"
