#!/usr/bin/env bash
# One GPU session of at most 10 minutes, prepared so that a lent GPU machine is used at
# once: DINO-pretrain the full-size ViT-S/8 encoder, finetune seg_sax_cine from it, and
# score it on the ACDC test patients beside the CPU weights. Every stage stops itself on
# its time budget (checkpoint + export), so the whole run fits the device's limit.
#
#   bash Training/gpu_session.sh                       # on the GPU machine (device tool)
#   DEVICE=cpu BATCH=2 WORKERS=0 PRETRAIN_MIN=0.3 FINETUNE_MIN=0.3 PYTHON=.venv/bin/python \
#       bash Training/gpu_session.sh                   # dry run on CPU
#
# DATA: folder with acdc/ and emidec/ (../shared/data); OUT: run folder (results are
# copied to $OUT/results; on the device machine set OUT=$OUT to bring them back).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/gpu_session}
DEVICE=${DEVICE:-cuda}
PRETRAIN_MIN=${PRETRAIN_MIN:-4}
FINETUNE_MIN=${FINETUNE_MIN:-4}
EVAL=${EVAL:-1}
BATCH=(${BATCH:+--batch-size "$BATCH"})  # a small batch for the CPU dry run; the configs' otherwise
mkdir -p "$OUT"
start=$(date +%s)

"$PYTHON" - <<PY | tee "$OUT/device.txt"
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
PY

# 1. DINO pretraining of ViT-S/8 (the published setup, bf16) on every ACDC and EMIDEC image.
"$PYTHON" Training/pretrain_dino.py --config Training/configs/dino_vit_small.json \
    --data "$DATA/acdc" "$DATA/emidec" --out "$OUT/dino" --device "$DEVICE" \
    --workers "${WORKERS:-8}" --max-minutes "$PRETRAIN_MIN" "${BATCH[@]}" 2>&1 | tail -n 20

# 2. Finetune seg_sax_cine from it (full finetuning, ACDC train split, best validation kept).
"$PYTHON" Training/finetune.py --task seg_sax_cine --config Training/configs/finetune_vit_small.json \
    --encoder-weights "$OUT/dino/encoder.safetensors" --sources acdc --out "$OUT/seg_sax_cine" \
    --weights-out "$OUT/weights" --device "$DEVICE" --workers "${WORKERS:-8}" \
    --max-minutes "$FINETUNE_MIN" "${BATCH[@]}" 2>&1 | tail -n 20

# 3. Score it on the ACDC test patients (the same samples as every CPU row).
if [ "$EVAL" = "1" ]; then
  "$PYTHON" Training/evaluate.py --task seg_sax_cine --weights "$OUT/weights" --sources acdc \
      --device "$DEVICE" --out "$OUT/results" 2>&1 | tail -n 20
fi
echo "gpu session: $(( $(date +%s) - start )) s in all" | tee -a "$OUT/device.txt"
