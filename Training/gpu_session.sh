#!/usr/bin/env bash
# One GPU call of at most ten minutes, prepared so that a lent GPU machine is used at once.
# Two jobs share the GPU (the card is far from full; the 16 CPU cores feed both):
#   - the full-size configuration: DINO-pretrain ViT-S/8, finetune seg_sax_cine from it and
#     score it on the ACDC test patients beside the CPU weights;
#   - the CPU set's hybrid_small encoder finetuned for several tasks from the shipped SimMIM
#     export, with far more steps than the CPU affords (HYBRID_TASKS).
# Every stage stops itself on its time budget (checkpoint + export, best validation kept).
#
#   # here: pack the data and the wheels the GPU image lacks (see Training/README.md)
#   python Training/pack_device_data.py ../shared/data .device_data
#   # on the device (carry .device_data and .whl): DATA=.device_data bash Training/gpu_session.sh
#   # dry run on CPU:
#   DEVICE=cpu BATCH=2 WORKERS=0 HYBRID_WORKERS=0 PRETRAIN_MIN=0.3 FINETUNE_MIN=0.3 HYBRID_MIN=0.3 \
#       PYTHON=.venv/bin/python DATA=.device_data bash Training/gpu_session.sh
#
# What comes back is written to OUT (the device tool's $OUT: at most 8 files): session.tar.gz
# (logs, summaries, results, manifests) and hybrid_<task>.safetensors per hybrid task.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DATA=${DATA:-../shared/data}
RUN=${RUN:-runs/gpu_session}   # work folder on the machine
OUT=${OUT:-$RUN/out}           # what to bring back
DEVICE=${DEVICE:-cuda}
PRETRAIN_MIN=${PRETRAIN_MIN:-3}
FINETUNE_MIN=${FINETUNE_MIN:-2.5}
HYBRID_MIN=${HYBRID_MIN:-6}
# task:sources:epochs[:workers] (epochs sizes each learning-rate schedule to the budget on an H200;
# the tasks that need synthetic studies stay on the CPU: the phantom cache does not travel)
HYBRID_TASKS=${HYBRID_TASKS-"seg_sax_cine:acdc:40 seg_lge:emidec:100 rv_insertion:acdc:40 lge_presence:emidec:300:1"}
EVAL=${EVAL:-1}
BATCH=(${BATCH:+--batch-size "$BATCH"})  # a small batch for the CPU dry run; the configs' otherwise
mkdir -p "$RUN" "$OUT"
start=$(date +%s)

# The checkout is not pip-installed there: the library and the training package from the tree.
export PYTHONPATH=$PWD:$PWD/Training${PYTHONPATH:+:$PYTHONPATH}
# The GPU image has torch, numpy, scipy and safetensors, not MONAI or pydicom: install the
# carried wheels (Training/README.md says how to download them).
if [ -d .whl ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

"$PYTHON" - <<PY | tee "$RUN/device.txt"
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
PY

# Hybrid tasks in the background, one process each.
hybrid_pids=()
for spec in $HYBRID_TASKS; do
  IFS=: read -r task sources epochs workers <<<"$spec"
  "$PYTHON" Training/finetune.py --task "$task" --config Training/configs/finetune_hybrid_gpu.json \
      --encoder-weights Resources/Weights/mim_hybrid_encoder.safetensors --sources $sources \
      --shared-root "$DATA" --epochs "$epochs" --out "$RUN/hybrid_$task" --device "$DEVICE" \
      --workers "${workers:-${HYBRID_WORKERS:-3}}" --max-minutes "$HYBRID_MIN" "${BATCH[@]}" >"$RUN/hybrid_$task.log" 2>&1 &
  hybrid_pids+=($!)
done

# 1. DINO pretraining of ViT-S/8 (bf16) on every ACDC and EMIDEC image, a schedule sized to minutes.
"$PYTHON" Training/pretrain_dino.py --config Training/configs/dino_vit_small_short.json \
    --data "$DATA/acdc" "$DATA/emidec" --out "$RUN/dino" --device "$DEVICE" \
    --workers "${WORKERS:-6}" --max-minutes "$PRETRAIN_MIN" "${BATCH[@]}" >"$RUN/dino.log" 2>&1 || echo "DINO failed"
tail -n 5 "$RUN/dino.log"

# 2. Finetune seg_sax_cine from it (full finetuning, ACDC train split, best validation kept).
"$PYTHON" Training/finetune.py --task seg_sax_cine --config Training/configs/finetune_vit_small.json \
    --encoder-weights "$RUN/dino/encoder.safetensors" --sources acdc --shared-root "$DATA" \
    --out "$RUN/vit_seg_sax_cine" --weights-out "$RUN/vit_weights" --device "$DEVICE" \
    --workers "${WORKERS:-6}" --max-minutes "$FINETUNE_MIN" "${BATCH[@]}" >"$RUN/vit_finetune.log" 2>&1 \
    || echo "ViT finetuning failed"
tail -n 3 "$RUN/vit_finetune.log"

collect() {  # what comes back, written again after each stage so that a cut-off call still returns it
  for spec in $HYBRID_TASKS; do
    task=${spec%%:*}
    weights="$RUN/hybrid_$task/weights/$task.safetensors"
    if [ -f "$weights" ]; then cp "$weights" "$OUT/hybrid_$task.safetensors"; fi
  done
  echo "gpu session: $(( $(date +%s) - start )) s so far" >>"$RUN/device.txt"
  # Everything small in one archive (ViT-S/8's weights stay behind: 57 MB is over the limit).
  (cd "$RUN" && find . \( -name '*.log' -o -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name 'device.txt' \) \
      -not -path './out/*' -print0 | tar -czf - --null -T -) >"$OUT/session.tar.gz"
}

for pid in "${hybrid_pids[@]}"; do wait "$pid" || echo "a hybrid task failed (see its log)"; done
for spec in $HYBRID_TASKS; do tail -n 2 "$RUN/hybrid_${spec%%:*}.log"; done
collect

# 3. Score ViT-S/8 on the ACDC test patients (the same samples as every CPU row).
if [ "$EVAL" = "1" ] && [ -f "$RUN/vit_weights/seg_sax_cine.safetensors" ]; then
  "$PYTHON" Training/evaluate.py --task seg_sax_cine --weights "$RUN/vit_weights" --sources acdc \
      --shared-root "$DATA" --device "$DEVICE" --out "$RUN/vit_results" >"$RUN/vit_eval.log" 2>&1 || echo "evaluation failed"
  tail -n 8 "$RUN/vit_eval.log"
  collect
fi
ls -la "$OUT"
