#!/usr/bin/env bash
# The sweep measurement of docs/SCALE.md: RUNS runs x CHECKPOINTS checkpoints of the
# tiny BERT (tests/fixtures/hf-tiny-run; its 12 checkpoints' weights hard-linked under
# every step name, trainer_state.json rewritten per step), watched by one
# `dwell watch --runs` until every run is finished by --idle. Prints peak RSS, wall
# time, time per checkpoint and the index page's size.
#   bash bench/sweep_scale.sh [RUNS] [CHECKPOINTS] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
checkpoints=${2:-50}
work=${3:-target/sweep-scale}
dwell=${DWELL:-target/release/dwell}
[ -x "$dwell" ] || cargo build --release --locked
rm -rf "$work"
root="$work/sweep"
fixture=tests/fixtures/hf-tiny-run
python3 - "$fixture" "$root" "$runs" "$checkpoints" <<'PY'
import json, os, shutil, sys
fixture, root, runs, checkpoints = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sources = sorted((int(d.split("-")[1]) for d in os.listdir(fixture) if d.startswith("checkpoint-")))
max_steps = 10 * checkpoints
for run in range(runs):
    for k in range(1, checkpoints + 1):
        step = 10 * k
        source = os.path.join(fixture, f"checkpoint-{sources[(k - 1 + run) % len(sources)]}")
        target = os.path.join(root, f"run-{run:02d}", f"checkpoint-{step}")
        os.makedirs(target)
        for name in os.listdir(source):
            if name == "trainer_state.json":
                continue
            if name == "model.safetensors":
                os.link(os.path.join(source, name), os.path.join(target, name))
            else:
                shutil.copy(os.path.join(source, name), os.path.join(target, name))
        state = json.load(open(os.path.join(source, "trainer_state.json")))
        state["global_step"], state["max_steps"] = step, max_steps
        json.dump(state, open(os.path.join(target, "trainer_state.json"), "w"))
PY
log="$work/watch.log"
start=$(date +%s.%N)
/usr/bin/time -v "$dwell" watch --runs "$root" --probe data/debian-sections/test.jsonl \
    --max-len 64 --poll 1 --settle 0 --idle 5 --exit-on-finish 2>"$log"
end=$(date +%s.%N)
total=$((runs * checkpoints))
embedded=$(grep -c '"embedded"\| embedded ' "$log" || true)
rss=$(grep 'Maximum resident set size' "$log" | awk '{print $NF}')
seconds=$(echo "$end - $start" | bc)
echo "runs: $runs x $checkpoints checkpoints = $total"
echo "embedded: $embedded"
echo "wall: ${seconds} s, $(echo "scale=3; $seconds / $total" | bc) s per checkpoint (including the final 5 s idle)"
echo "peak RSS: $((rss / 1024)) MiB"
echo "index.html: $(stat -c %s "$root-state/index.html") bytes, index.json: $(stat -c %s "$root-state/index.json") bytes"
echo "state: $(du -sh "$root-state" | cut -f1)"
