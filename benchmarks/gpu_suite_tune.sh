#!/usr/bin/env bash
# Candidate settings for the gpu-fast preset, raced for 120 s each on tiny-shakespeare, so that
# the preset is picked from measurements. Why: the first GPU run (race_cuda.json, 2026-12-01)
# peaked at step 600 (24 s, val 1.4467) and then overfit to 2.37 by 120 s (95 passes over the
# 1 MB corpus); the sha-lstm race likewise peaked at 53 s. Each candidate writes
# race_cuda_tune_<name>.json (race.py's result: the whole validation curve and every setting).
# The learning rate already decays over the time budget: race.py sets max_time, which drives
# the trainer's warmup + cosine schedule (training/schedule.py), so a shorter or longer budget
# stretches the schedule rather than cutting it off.
#
#   bash benchmarks/gpu_suite.sh --prepare       # here, first: copies the corpora to .gpudata
#   bash benchmarks/gpu_suite_tune.sh a          # one group of three candidates: ~7.5 minutes
#   bash benchmarks/gpu_suite_tune.sh b          # the other three
#   bash benchmarks/gpu_suite_tune.sh d05 awd    # candidates by name (below), in that order
#   bash benchmarks/gpu_suite_tune.sh --tiny     # anywhere, on CPU: every candidate, 2-s races
#
# With the device tool (at most 10 minutes a call): one group a call,
#   run(command="bash benchmarks/gpu_suite_tune.sh a", carry=[".gpudata"], timeout_s=540)
# (a session lent 15 minutes of device time, machine start included, fits one group; pick two
# candidates, ~4.5 minutes, to run after gpu_suite.sh in the same session)
# then copy $OUT's JSON files into benchmarks/results/. A candidate killed at its limit still
# leaves its curve so far (race.py writes it after every evaluation).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${LSTMGEN_DATA_DIR:-$ROOT/.gpudata}

# name: race.py overrides on top of --preset gpu-fast (3x1024, embedding 128, dropout 0.35,
# batch 128x256, lr 2e-3, weight decay 0.1, fp32)
declare -A CANDIDATES=(
  [control]=""                                 # the preset itself, for this session's noise
  [d05]="dropout=0.5"                          # stronger dropout at the same width
  [h512_d035]="hidden_size=512"                # a quarter of the recurrent weights
  [d05_wd1]="dropout=0.5 weight_decay=1.0"     # plus strong decoupled weight decay
  [d05_lr1e3]="dropout=0.5 lr=0.001"           # a slower start: overfits later, if at all
  # AWD-LSTM's regularisers (issue 16) instead of plain dropout: DropConnect on weight_hh,
  # locked dropout on the input, between layers and on the output
  [awd]="dropout=0 weight_drop=0.3 dropout_input=0.2 dropout_hidden=0.3 dropout_output=0.4"
)
declare -A GROUPS_OF=([a]="control d05 h512_d035" [b]="d05_wd1 d05_lr1e3 awd")
ORDER="control d05 h512_d035 d05_wd1 d05_lr1e3 awd"

WHAT=${1:-}
BUDGET=${TUNE_BUDGET:-120}
LIMIT=$((${BUDGET%.*} + 30)) # setup, evaluations and checkpoints: ~13 s in the first run
RACE=(--preset gpu-fast --device cuda)
if [ "$WHAT" = "--tiny" ]; then
  WHAT=all BUDGET=2 LIMIT=120 RACE=(--tiny --device cpu)
  DATA=${LSTMGEN_DATA_DIR:-$ROOT/../shared/data}
  OUTDIR=${OUT:-$(mktemp -d)}
  PREFIX=race_tiny_tune_
else
  OUTDIR=${OUT:-$ROOT/benchmarks/results}
  PREFIX=race_cuda_tune_
fi
[ "$WHAT" = all ] || WHAT="$*" # several groups or candidates: run in the order given
NAMES=""
for w in $WHAT; do
  case "$w" in
    all) NAMES="$NAMES $ORDER" ;;
    a | b) NAMES="$NAMES ${GROUPS_OF[$w]}" ;;
    *)
      if [ -z "${CANDIDATES[$w]+set}" ]; then
        echo "usage: $0 a|b|all|--tiny|CANDIDATE... (candidates: $ORDER)" >&2
        exit 2
      fi
      NAMES="$NAMES $w"
      ;;
  esac
done
if [ -z "$NAMES" ]; then
  echo "usage: $0 a|b|all|--tiny|CANDIDATE... (candidates: $ORDER)" >&2
  exit 2
fi
if [ ! -f "$DATA/tiny-shakespeare/train.txt" ]; then
  echo "error: $DATA lacks tiny-shakespeare: run 'bash benchmarks/gpu_suite.sh --prepare'" \
    "here first and carry .gpudata" >&2
  exit 2
fi
mkdir -p "$OUTDIR"
source "$ROOT/benchmarks/gpu_env.sh"
LOG=$OUTDIR/gpu_suite_tune.log
FAILED=()
for name in $NAMES; do
  # shellcheck disable=SC2206  # the overrides are words on purpose
  overrides=(${CANDIDATES[$name]})
  echo "== $name (budget ${BUDGET}s, limit ${LIMIT}s): ${overrides[*]:-the preset}" | tee -a "$LOG"
  t0=$SECONDS
  timeout "$LIMIT" "$PY" benchmarks/race.py "${RACE[@]}" --budget "$BUDGET" \
    --data "$DATA/tiny-shakespeare" --name "$PREFIX$name" \
    ${overrides[@]+"${overrides[@]}"} 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
  [ "$rc" = 0 ] || FAILED+=("$name")
done
# One line per candidate measured so far in this folder: best loss, when, and where it ended.
"$PY" - "$OUTDIR" "$PREFIX" <<'EOF' 2>&1 | tee -a "$LOG"
import json, pathlib, sys

for path in sorted(pathlib.Path(sys.argv[1]).glob(sys.argv[2] + "*.json")):
    r = json.loads(path.read_text())
    end = r["curve"][-1]["val_loss"] if r.get("curve") else float("nan")
    print(
        f"{path.stem}: best {r['val_loss_nats_per_char']:.4f} at {r['best_elapsed_s']} s, "
        f"last {end:.4f}{' (partial)' if r.get('partial') else ''}"
    )
EOF
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED: ${FAILED[*]}" | tee -a "$LOG"
  exit 1
fi
echo "all candidates ran; results in $OUTDIR" | tee -a "$LOG"
