#!/usr/bin/env bash
# Side-by-side benchmark of pier-monitor and Debian's conmon driving the same
# runc and the same busybox bundle. Run as root:
#
#   contrib/bench/monitor/bench.sh [LOG_BYTES] [RUNS]
#
# LOG_BYTES: payload the throughput container writes (default 1000000000,
# 100-byte lines, rounded down to a multiple of 1 MB); RUNS: repetitions, medians reported (default 5).
# Env: PIER_MONITOR (default target/release/pier-monitor, built if missing),
# CONMON (/usr/bin/conmon), RUNC (/usr/sbin/runc), BUSYBOX (/bin/busybox),
# WORK (scratch dir on the disk to measure, default /var/tmp),
# LOG_RATIO_MIN (default 3: the check at the end fails, exit status 1, when
# pier-monitor's median log throughput is below this many times conmon's;
# 0 turns it off).
set -euo pipefail

LOG_BYTES=${1:-1000000000}
LOG_RATIO_MIN=${LOG_RATIO_MIN:-3}
RUNS=${2:-5}
ROOT_DIR=$(cd "$(dirname "$0")/../../.." && pwd)
PIER_MONITOR=${PIER_MONITOR:-$ROOT_DIR/target/release/pier-monitor}
CONMON=${CONMON:-/usr/bin/conmon}
RUNC=${RUNC:-/usr/sbin/runc}
BUSYBOX=${BUSYBOX:-/bin/busybox}
CG_PARENT=pier-bench-$$

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
if [ ! -x "$PIER_MONITOR" ]; then
    (cd "$ROOT_DIR" && cargo build --release -p pier-monitor && contrib/static-bins.sh --release)
fi
# Made once nothing before the cleanup trap can fail any more.
WORK=$(mktemp -d "${WORK:-/var/tmp}/pier-bench.XXXXXX")
RROOT=$WORK/runc

# A freshly built binary's page-cache pages stay dirty until writeback, and
# smaps counts them as the monitor's private dirty memory: flush them first.
sync

cleanup() {
    for id in $("$RUNC" --root "$RROOT" list -q 2>/dev/null); do
        "$RUNC" --root "$RROOT" delete -f "$id" >/dev/null 2>&1 || true
    done
    for d in /sys/fs/cgroup/*/"$CG_PARENT" /sys/fs/cgroup/"$CG_PARENT"; do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- bundle ---------------------------------------------------------------
make_bundle() { # dir args_json
    local b=$1
    mkdir -p "$b/rootfs/bin" "$b/rootfs/proc" "$b/rootfs/dev" "$b/rootfs/sys" "$b/rootfs/tmp"
    cp "$BUSYBOX" "$b/rootfs/bin/busybox"
    for a in $("$BUSYBOX" --list); do
        [ "$a" = busybox ] || ln -sf busybox "$b/rootfs/bin/$a"
    done
    "$RUNC" spec --bundle "$b"
    python3 - "$b/config.json" "$2" "$CG_PARENT" <<'PY'
import json, sys, os
path, args, cg = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
spec = json.load(open(path))
spec["process"]["args"] = args
spec["process"]["terminal"] = False
spec["root"]["readonly"] = False
spec["linux"]["cgroupsPath"] = "/%s/%s" % (cg, os.path.basename(os.path.dirname(path)))
json.dump(spec, open(path, "w"))
PY
}

# --- cpu accounting: each monitor runs in its own cgroup ------------------
if [ -d /sys/fs/cgroup/cpuacct ]; then CPU_CG=/sys/fs/cgroup/cpuacct; else CPU_CG=/sys/fs/cgroup; fi
cpu_ns() { # cgroup dir
    if [ -f "$1/cpuacct.usage" ]; then cat "$1/cpuacct.usage"
    else awk '/^usage_usec/ {print $2 * 1000}' "$1/cpu.stat"; fi
}

now_ns() { date +%s%N; }

# Launch one monitor for container $1 (bundle $2) inside cgroup $3; prints
# the monitor's pid file path. $4: log path.
launch() { # kind id bundle cgdir log
    local kind=$1 id=$2 bundle=$3 cg=$4 log=$5 d=$WORK/$2
    mkdir -p "$d/run" "$d/exit" "$cg"
    case $kind in
    pier)
        sh -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$cg" \
            "$PIER_MONITOR" --id "$id" --bundle "$bundle" --runtime "$RUNC" \
            --runtime-arg --root --runtime-arg "$RROOT" --log-path "$log" \
            --exit-dir "$d/run" --exit-dir "$d/exit" --runtime-dir "$d/run" 2>"$d/monitor.err"
        for _ in $(seq 500); do [ -s "$d/run/monitor.pid" ] && break; sleep 0.01; done
        echo "$d/run/monitor.pid" ;;
    conmon)
        sh -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$cg" \
            "$CONMON" --api-version 1 -c "$id" -u "$id" -n "$id" -r "$RUNC" -b "$bundle" \
            -p "$d/run/container.pid" -P "$d/run/conmon.pid" -l "k8s-file:$log" \
            --exit-dir "$d/exit" --socket-dir-path "$d/run" --log-level error \
            --runtime-arg --root --runtime-arg "$RROOT" 2>"$d/monitor.err"
        for _ in $(seq 500); do [ -s "$d/run/container.pid" ] && [ -s "$d/run/conmon.pid" ] && break; sleep 0.01; done
        echo "$d/run/conmon.pid" ;;
    esac
}

exit_file() { # kind id
    case $1 in pier) echo "$WORK/$2/exit/exit" ;; conmon) echo "$WORK/$2/exit/$2" ;; esac
}

wait_file() { for _ in $(seq 600000); do [ -e "$1" ] && return 0; sleep 0.005; done; return 1; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# --- idle memory ------------------------------------------------------------
idle_bundle=$WORK/idle-bundle
make_bundle "$idle_bundle" '["/bin/sleep","3600"]'
declare -A R
for kind in pier conmon; do
    : >"$WORK/$kind.rss"; : >"$WORK/$kind.pss"; : >"$WORK/$kind.pd"
done
for run in $(seq "$RUNS"); do
    for kind in pier conmon; do
        id=idle-$kind-$run
        pidf=$(launch $kind "$id" "$idle_bundle" "$CPU_CG/$CG_PARENT/mon-$id" "$WORK/$id.log")
        "$RUNC" --root "$RROOT" start "$id"
        sleep 2
        pid=$(awk '{print $1}' "$pidf")
        awk '/^Rss:/ {r=$2} /^Pss:/ {p=$2} /^Private_Dirty:/ {d=$2} END {print r; print p > "/dev/stderr"; print d > "/dev/fd/3"}' \
            "/proc/$pid/smaps_rollup" >>"$WORK/$kind.rss" 2>>"$WORK/$kind.pss" 3>>"$WORK/$kind.pd"
        "$RUNC" --root "$RROOT" kill "$id" KILL
        wait_file "$(exit_file $kind "$id")"
        sleep 0.2
        "$RUNC" --root "$RROOT" delete -f "$id" >/dev/null 2>&1 || true
    done
done
for kind in pier conmon; do
    R[$kind.rss]=$(median <"$WORK/$kind.rss")
    R[$kind.pss]=$(median <"$WORK/$kind.pss")
    R[$kind.pd]=$(median <"$WORK/$kind.pd")
done

# --- log throughput ---------------------------------------------------------
# The producer must outrun both monitors: busybox `yes | head` manages
# ~130 MB/s here, and a shell loop that runs one `cat` per MB spends its
# time forking. So the container cats a 1 MB file of 100-byte lines 100
# times per `cat` (busybox cat splices from the page cache): ~3 GB/s alone.
line=$(printf '%099d' 0)
tp_bundle=$WORK/tp-bundle
reps=$((LOG_BYTES / 1000000))
LOG_BYTES=$((reps * 1000000))
hundred=$(for _ in $(seq 100); do printf '/lines '; done)
rest=$(for _ in $(seq $((reps % 100))); do printf '/lines '; done)
script="i=0; while [ \$i -lt $((reps / 100)) ]; do cat $hundred; i=\$((i+1)); done"
[ -n "$rest" ] && script="$script; cat $rest"
make_bundle "$tp_bundle" "[\"/bin/sh\",\"-c\",\"$script\"]"
for _ in $(seq 10000); do echo "$line"; done >"$tp_bundle/rootfs/lines"
for kind in pier conmon; do : >"$WORK/$kind.mbs"; : >"$WORK/$kind.cpu"; done
for run in $(seq "$RUNS"); do
    for kind in pier conmon; do
        id=tp-$kind-$run
        cg=$CPU_CG/$CG_PARENT/mon-$id
        log=$WORK/$id.log
        launch $kind "$id" "$tp_bundle" "$cg" "$log" >/dev/null
        t0=$(now_ns)
        "$RUNC" --root "$RROOT" start "$id"
        wait_file "$(exit_file $kind "$id")"
        t1=$(now_ns)
        # The monitor may still be finishing up (conmon syncs the log).
        for _ in $(seq 1000); do [ -z "$(cat "$cg/cgroup.procs")" ] && break; sleep 0.01; done
        cpu=$(cpu_ns "$cg")
        awk -v b="$LOG_BYTES" -v t=$((t1 - t0)) 'BEGIN {printf "%.1f\n", b / (t / 1e9) / 1e6}' >>"$WORK/$kind.mbs"
        awk -v b="$LOG_BYTES" -v c="$cpu" 'BEGIN {printf "%.3f\n", c / 1e9 / (b / 1e9)}' >>"$WORK/$kind.cpu"
        "$RUNC" --root "$RROOT" delete -f "$id" >/dev/null 2>&1 || true
        rm -f "$log"
    done
done
for kind in pier conmon; do
    R[$kind.mbs]=$(median <"$WORK/$kind.mbs")
    R[$kind.cpu]=$(median <"$WORK/$kind.cpu")
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}'; }
echo
echo "pier-monitor vs conmon ($("$CONMON" --version | head -1)), runc $("$RUNC" --version | head -1 | awk '{print $3}')"
echo "runs: $RUNS (medians), log payload: $LOG_BYTES bytes of 100-byte lines"
printf '%-34s %12s %12s %10s\n' metric pier-monitor conmon pier/conmon
printf '%-34s %12s %12s %10s\n' "idle RSS (kB)" "${R[pier.rss]}" "${R[conmon.rss]}" "$(ratio "${R[pier.rss]}" "${R[conmon.rss]}")"
printf '%-34s %12s %12s %10s\n' "idle PSS (kB)" "${R[pier.pss]}" "${R[conmon.pss]}" "$(ratio "${R[pier.pss]}" "${R[conmon.pss]}")"
printf '%-34s %12s %12s %10s\n' "idle private dirty (kB)" "${R[pier.pd]}" "${R[conmon.pd]}" "$(ratio "${R[pier.pd]}" "${R[conmon.pd]}")"
printf '%-34s %12s %12s %10s\n' "log throughput (MB/s payload)" "${R[pier.mbs]}" "${R[conmon.mbs]}" "$(ratio "${R[pier.mbs]}" "${R[conmon.mbs]}")"
printf '%-34s %12s %12s %10s\n' "monitor CPU (s per GB payload)" "${R[pier.cpu]}" "${R[conmon.cpu]}" "$(ratio "${R[pier.cpu]}" "${R[conmon.cpu]}")"

# Regression check: both monitors ran in the same runs, so the ratio holds
# even when the machine's load moves the absolute figures.
pairs=$(paste -d' ' "$WORK/pier.mbs" "$WORK/conmon.mbs" | awk '{printf "%s%.2f", (NR > 1 ? " " : ""), ($2 > 0) ? $1 / $2 : 0}')
echo "log throughput per run (MB/s): pier $(paste -sd' ' "$WORK/pier.mbs"); conmon $(paste -sd' ' "$WORK/conmon.mbs"); pier/conmon $pairs"
log_ratio=$(ratio "${R[pier.mbs]}" "${R[conmon.mbs]}")
if awk -v r="$log_ratio" -v m="$LOG_RATIO_MIN" 'BEGIN {exit !(r >= m)}'; then
    echo "check: log throughput pier/conmon $log_ratio >= $LOG_RATIO_MIN: ok"
else
    echo "check: log throughput pier/conmon $log_ratio < $LOG_RATIO_MIN: REGRESSION"
    exit 1
fi
