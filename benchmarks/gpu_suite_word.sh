#!/usr/bin/env bash
# The word-level GPU rows of issue #16 (PTB and WikiText-2 test perplexity, lstmgen's word-gpu
# preset against the word_language_model baseline, 10 minutes each): split from gpu_suite.sh,
# whose whole run fits 7.5 minutes, because these five trainings take 50.
#
#   bash benchmarks/gpu_suite.sh --prepare        # here, first: copies PTB and WikiText-2 too
#   bash benchmarks/gpu_suite_word.sh all         # a GPU machine without a per-call limit
#   bash benchmarks/gpu_suite_word.sh ptb-lstmgen # one of: {ptb,wikitext-2}-{lstmgen,baseline},
#                                                 # ptb-ntasgd (word-gpu under NT-ASGD instead
#                                                 # of AdamW: word_sweep.GPU_CANDIDATES)
#   bash benchmarks/gpu_suite_word.sh --tiny      # anywhere, on CPU: every step, 20 s budgets,
#                                                 # 2,000-token validation and test prefixes
#
# With the device tool (at most 10 minutes a call): one step a call, with a budget that leaves
# room for the corpus, the evaluations and the test pass, e.g.
#   run(command="WORD_BUDGET=420 bash benchmarks/gpu_suite_word.sh ptb-lstmgen",
#       carry=[".gpudata"], timeout_s=600)
# (the published 10-minute rows need WORD_BUDGET=600, on a machine that allows ~12-minute
# calls). Each step writes word_quality_gpu_<step>.json to $OUT (or benchmarks/results).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${LSTMGEN_DATA_DIR:-$ROOT/.gpudata}
WHAT=${1:-all}
BUDGET=${WORD_BUDGET:-600}
DEVICE=cuda
EXTRA=()
if [ "$WHAT" = "--tiny" ]; then
  WHAT=all BUDGET=20 DEVICE=cpu EXTRA=(--eval-tokens 2000 --test-tokens 2000)
  DATA=${LSTMGEN_DATA_DIR:-$ROOT/../shared/data}
  OUTDIR=${OUT:-$(mktemp -d)}
else
  OUTDIR=${OUT:-$ROOT/benchmarks/results}
fi
if [ ! -f "$DATA/wikitext-2/wiki.test.tokens" ] || [ ! -f "$DATA/ptb/ptb.test.txt" ]; then
  echo "error: $DATA lacks PTB or WikiText-2: run 'bash benchmarks/gpu_suite.sh --prepare'" \
    "here first and carry .gpudata" >&2
  exit 2
fi
mkdir -p "$OUTDIR"
source "$ROOT/benchmarks/gpu_env.sh"
LOG=$OUTDIR/gpu_suite_word.log
FAILED=()
STEPS=(ptb-lstmgen ptb-baseline wikitext-2-lstmgen wikitext-2-baseline ptb-ntasgd)
[ "$WHAT" = all ] || STEPS=("$WHAT")
for s in "${STEPS[@]}"; do
  corpus=${s%-*} side=${s##*-}
  WHICH=(--only "$side")
  case "$corpus/$side" in
    ptb/lstmgen | ptb/baseline | wikitext-2/lstmgen | wikitext-2/baseline) ;;
    ptb/ntasgd) WHICH=(--only lstmgen --candidate word-gpu-ntasgd) ;;
    *) echo "error: unknown step $s (one of ${STEPS[*]}, or all)" >&2; exit 2 ;;
  esac
  echo "== $s (budget ${BUDGET}s on $DEVICE)" | tee -a "$LOG"
  t0=$SECONDS
  # the training budget, then the corpus, evaluations and the test pass: 3 minutes at most
  timeout $((${BUDGET%.*} + 180)) "$PY" benchmarks/word_quality.py --device "$DEVICE" \
    --corpora "$corpus" "${WHICH[@]}" --budget "$BUDGET" --name "word_quality_gpu_$s" \
    ${EXTRA[@]+"${EXTRA[@]}"} 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  echo "== $s: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
  [ "$rc" = 0 ] || FAILED+=("$s")
done
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED: ${FAILED[*]}" | tee -a "$LOG"
  exit 1
fi
echo "all steps passed; results in $OUTDIR" | tee -a "$LOG"
