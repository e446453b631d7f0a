# Sourced by the GPU suites (gpu_suite.sh, gpu_suite_word.sh, gpu_suite_tune.sh): the
# environment every step runs in. Needs ROOT, DATA and OUTDIR; sets PY.
# Keep a PYTHONPATH the caller set (e.g. wheels carried to the GPU machine).
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export LSTMGEN_DATA_DIR=$DATA LSTMGEN_RESULTS_DIR=$OUTDIR
# The GPU machine's copy of the tree has no git history: --prepare recorded the commit.
[ -f "$DATA/commit" ] && export LSTMGEN_GIT_COMMIT=${LSTMGEN_GIT_COMMIT:-$(cat "$DATA/commit")}
PY=${PYTHON:-python3}
