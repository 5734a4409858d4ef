#!/usr/bin/env bash
# Strong scaling on one machine: 20 EP steps of splitting_small_2block at batch 64, as
# `mpirun -n 2 ffebm --threads 1` (2 ranks, 1 thread each) against one process with
# 2 threads, interleaved REPS times (the machine may be shared: compare CPU-time ratios of
# neighbouring runs). Needs a `--features mpi` build and FFEBM_DATA.
# Usage: tools/mpi_scaling.sh [REPS] [STEPS]   (prints one line per run)
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-2}
steps=${2:-20}
bin=target/release/ffebm
out=$(mktemp -d)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# one more batch than the steps: the session stops mid-epoch, before any evaluation
args=(train --preset splitting_small_2block --set data.batch_size=64
      --set "data.train_limit=$((64 * (steps + 1)))" --set data.test_limit=64
      --set train.log_every=1 --stop-after "$steps")
run() { # name, command...
    local name=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f "%U %S" -o "$out/time" "$@" --out "$out/$name-$i" >/dev/null 2>"$out/log"
    t1=$(date +%s.%N)
    read -r user sys <"$out/time"
    # seconds per step from the metrics' wall clock (steps 2..N: the first warms caches)
    per=$(python3 -c "import json,sys; r=[json.loads(l) for l in open('$out/$name-$i/metrics.jsonl') if '\"step\"' in l]; r=[x for x in r if x['kind']=='step']; print((r[-1]['time']-r[0]['time'])/(len(r)-1))")
    comm=$(grep -ao 'gradient all-reduce.*' "$out/log" || true)
    printf '%-10s rep %d: wall %.1f s, CPU %.1f s (user %s, sys %s), %.3f s/step (steps 2-%d) %s\n' \
        "$name" "$i" "$(echo "$t1 - $t0" | bc)" "$(echo "$user + $sys" | bc)" "$user" "$sys" "$per" "$steps" "$comm"
}
for i in $(seq 1 "$reps"); do
    run one-2thr "$bin" --threads 2 "${args[@]}"
    run mpi-2x1 mpirun -n 2 --bind-to core --map-by core "$bin" --threads 1 "${args[@]}"
done
rm -rf "$out"
