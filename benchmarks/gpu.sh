#!/usr/bin/env bash
# One prepared GPU run (issue 15): the real Qwen2.5-VL-3B configuration, random weights, bf16, on one
# GPU, in under 8 minutes on an H100/H200-class card. Writes one JSON ($OUT/gpu.json) and prints a table:
#   recogniser ms per image at 16 and 64 pairs (detector excluded, and with YOLOv8x included),
#   shared prefix vs DA-HOI's per-pair full prompt (ratio), mean suffix length in tokens;
#   training step time and peak memory of LoRA and QLoRA at 8 images x 16 pairs, gradient checkpointing;
#   the evaluation figures (benchmarks/eval_speed.py; needs ../shared/data, else says so).
#
#   bash benchmarks/gpu.sh            # on the GPU machine
#   bash benchmarks/gpu.sh --dry      # a tiny preset on the CPU: checks the script end to end (minutes)
#
# Output folder: $OUT if set, else benchmarks/out-gpu. Each stage's log is kept beside the JSON.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out-gpu}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 YOLO_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python}"
if [ "${1:-}" = "--dry" ]; then
  MODE=dry CONFIG=tiny-qwen2.5-vl DEVICE=cpu DTYPE=float32 PAIRS="4 16" REPEATS=1 YOLO=yolov8n.yaml
  TRAIN="--methods lora --images 2 --pairs 4 --steps 1 --warmup 0"
else
  MODE=gpu CONFIG=qwen2.5-vl-3b DEVICE=cuda DTYPE=bfloat16 PAIRS="16 64" REPEATS=5 YOLO=yolov8x.yaml
  TRAIN="--methods lora,qlora --images 8 --pairs 16 --steps 3 --warmup 1"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu_name.txt" 2>&1 || true
fi
start=$(date +%s)
stage() {  # name, command...: run, keep the log, note the seconds and exit status
  local name=$1; shift
  local t0=$(date +%s)
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}" >> "$OUT/stages.jsonl"
  echo "[$name] rc=$rc in $(( $(date +%s) - t0 )) s (total $(( $(date +%s) - start )) s)"
}
rm -f "$OUT/stages.jsonl"
stage recognizer timeout 240 $PY benchmarks/recognizer.py --config $CONFIG --device $DEVICE --dtype $DTYPE \
  --pairs $PAIRS --repeats $REPEATS --skip-c --yolo $YOLO --json "$OUT/recognizer.json"
stage train_step timeout 300 $PY benchmarks/train_step.py --config $CONFIG --device $DEVICE --dtype $DTYPE $TRAIN \
  --json "$OUT/train_step.json"
if [ "$MODE" = gpu ]; then
  stage eval_speed timeout 120 $PY benchmarks/eval_speed.py --repeat 1
fi
$PY benchmarks/gpu_report.py "$OUT" --mode $MODE
