#!/usr/bin/env bash
# README command 1: set up .venv (idempotent) and run the main job, the real
# DiTASK workflow in small, on the CPU (about 5 minutes on 2 cores):
#   1. generate a PASCAL_MT-format dataset (data/synthetic_pascal_mt; reused);
#   2. stand-in pretraining: a plain Swin-T (no adapters, every parameter
#      trains) learns that data for a few epochs from random weights
#      (configs/main_job/standin-pretrain_swin-t_synthetic.py) and its backbone
#      is written as an official Swin checkpoint ({'model': sd}, official key
#      names, as swin_tiny_patch4_window7_224_22k.pth) by
#      tools/model_converters/export_official_swin.py (reused when present;
#      delete work_dirs/main/standin to pretrain again);
#   3. fine-tune DiTASK and the decoder-only baseline from that file, each
#      loading it through init_cfg=dict(type='Pretrained', checkpoint=...) as a
#      user's downloaded weights (configs/main_job/*_from-standin.py);
#   4. test both best checkpoints (metrics.json, prediction panels for DiTASK)
#      and print their metrics side by side with Δm, trainable parameters and
#      training time (tools/analysis_tools/compare_runs.py), into
#      work_dirs/main/comparison.{md,json}.
# Δm is computed against the PASCAL single-task Swin-T numbers, so on generated
# data only the comparison between the two runs means something.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
CONFIGS=configs/main_job
STANDIN_CONFIG=$CONFIGS/standin-pretrain_swin-t_synthetic.py
DATA=data/synthetic_pascal_mt
WORK=work_dirs/main
OFFICIAL=$WORK/standin/swin_official.pth
# drop the blank lines of mmengine's log; keep the rest as it comes
show() { grep --line-buffered -v "^\s*$"; }

echo "== 1/5 synthetic PASCAL_MT dataset: $DATA =="
if [[ -f "$DATA/ImageSets/Context/val.txt" ]]; then
  echo "reusing $DATA"
else
  "$PY" tools/dataset_converters/make_synthetic_mtl.py --dataset pascal --out "$DATA" \
      --num-train 48 --num-val 12 --size 128 128 --seed 0
fi

echo "== 2/5 stand-in pretraining: plain Swin-T, full fine-tuning ($STANDIN_CONFIG) =="
if [[ -f "$OFFICIAL" ]]; then
  echo "reusing $OFFICIAL (delete $WORK/standin to pretrain again)"
else
  "$PY" tools/train.py "$STANDIN_CONFIG" --work-dir "$WORK/standin" 2>&1 | show
  "$PY" tools/model_converters/export_official_swin.py "$STANDIN_CONFIG" "$(cat "$WORK/standin/last_checkpoint")" \
      --out "$OFFICIAL" 2>&1 | show
fi

step=3
for RUN in ditask decoder-only; do
  CONFIG=$CONFIGS/${RUN}_swin-t_synthetic-mtl_from-standin.py
  echo "== $step/5 fine-tuning $RUN from $OFFICIAL ($CONFIG; progress every 5 iterations) =="
  "$PY" tools/train.py "$CONFIG" --work-dir "$WORK/$RUN/train" \
      --cfg-options model.backbone.init_cfg.checkpoint="$OFFICIAL" 2>&1 | show
  step=$((step + 1))
done

echo "== 5/5 testing both best checkpoints =="
for RUN in ditask decoder-only; do
  CONFIG=$CONFIGS/${RUN}_swin-t_synthetic-mtl_from-standin.py
  CKPT=$(ls -t "$WORK/$RUN"/train/best_delta_m_epoch_*.pth | head -1)
  PANELS=()
  [[ $RUN == ditask ]] && PANELS=(--show-dir "$WORK/$RUN/panels")
  "$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK/$RUN/test" "${PANELS[@]}" \
      --cfg-options model.backbone.init_cfg.checkpoint="$OFFICIAL" 2>&1 | show
done

echo
echo "== DiTASK vs decoder-only, both from the stand-in pretrained Swin-T =="
"$PY" tools/analysis_tools/compare_runs.py "$WORK/ditask" "$WORK/decoder-only" --names DiTASK decoder-only \
    --out-dir "$WORK" 2>"$WORK/comparison.log" || { cat "$WORK/comparison.log"; exit 1; }
echo
echo "stand-in backbone (official Swin format): $OFFICIAL"
for RUN in ditask decoder-only; do
  echo "$RUN: checkpoint $(ls -t "$WORK/$RUN"/train/best_delta_m_epoch_*.pth | head -1)," \
       "metrics $WORK/$RUN/test/metrics.json, training log $(ls -d "$WORK/$RUN"/train/*/ | tail -1)"
done
echo "DiTASK prediction panels: $WORK/ditask/panels/ ($(ls "$WORK/ditask/panels" | wc -l) images)"
echo "comparison: $WORK/comparison.md, $WORK/comparison.json"
