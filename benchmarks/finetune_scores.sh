#!/usr/bin/env bash
# Demo fine-tune scores with and without pre-training, per pre-training schedule and per
# fine-tuning mode (the README's "What the demo fine-tunes reach" table).
#
#   bash benchmarks/finetune_scores.sh /tmp/finetune_scores [STEPS]
#
# Pre-trains the demo with schedules alternate, single and two (about 4.5 minutes each on
# 2 CPU cores), then fine-tunes every task for STEPS steps (default 300) from each of them and
# from scratch, in two-stream mode, plus single-stream from the alternate run. Runs that already
# have metrics.json are skipped, so the script can be rerun after an interruption. Prints one
# line per run with its task metrics. Not a test.
set -euo pipefail
OUT=${1:?usage: finetune_scores.sh OUT_DIR [STEPS]}
STEPS=${2:-300}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"

run() {  # name, then the command-line arguments
  local name=$1; shift
  if [ ! -f "$OUT/$name/metrics.json" ]; then
    rm -rf "${OUT:?}/$name"
    python -m semvlp_jax.main "$@" --workdir "$OUT/$name" > "$OUT/$name.log" 2>&1
  fi
}

for schedule in alternate single two; do
  run "pre_$schedule" --config configs/demo.py --config.schedule=$schedule
done
short="--config.total_steps=$STEPS --config.eval_every=$STEPS --config.checkpoint_every=$STEPS"
for task in vqa gqa nlvr2 retrieval; do
  run "${task}_scratch_two" --config "configs/finetune_$task.py:init=,mode=two" $short
  for schedule in alternate single two; do
    run "${task}_${schedule}_two" \
      --config "configs/finetune_$task.py:init=$OUT/pre_$schedule,mode=two" $short
  done
  run "${task}_alternate_single" \
    --config "configs/finetune_$task.py:init=$OUT/pre_alternate,mode=single" $short
done

python - "$OUT" <<'PY'
import json, pathlib, sys
keep = ('vqa_accuracy', 'gqa_accuracy', 'nlvr2_accuracy', 'nlvr2_consistency', 'retrieval_rsum')
for path in sorted(pathlib.Path(sys.argv[1]).glob('*/metrics.json')):
    metrics = json.loads(path.read_text())
    shown = {k: round(v, 4) for k, v in metrics.items() if k.endswith(keep)}
    if shown:
        print(path.parent.name, shown)
PY
