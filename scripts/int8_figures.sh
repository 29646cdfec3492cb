#!/usr/bin/env bash
# The figures of docs/int8.md, in one go: the imported human-pose-estimation-0001 checkpoint and a `make quickstart`
# model, each quantized by scripts/quantize.py, then timed and scored beside fp32 (and Open Model Zoo's INT8 IR).
#
#     bash scripts/int8_figures.sh QUICKSTART_FOLDER [OUTPUT_FOLDER]
#
# QUICKSTART_FOLDER is what `make quickstart` wrote (runs/quickstart/checkpoints/, data/ with its held-out split).
# Needs weights/hpe0001.pth (scripts/import_weights.py, docs/training.md) and ../shared (or SHARED=...).
set -euo pipefail
QS=${1:?usage: bash scripts/int8_figures.sh QUICKSTART_FOLDER [OUTPUT_FOLDER]}
OUT=${2:-int8_figures}
PY=${PY:-python}
SHARED=${SHARED:-../shared}
MINI_LABELS=$SHARED/data/coco_mini_train/annotations/person_keypoints_train2017.json
MINI_IMAGES=$SHARED/data/coco_mini_train/train2017
VTEST=$SHARED/data/video/vtest.avi
OMZ_IR=$SHARED/weights/human-pose-estimation-0001/FP16-INT8/human-pose-estimation-0001.xml
QS_CHECKPOINT=$(ls -t "$QS"/runs/quickstart/checkpoints/checkpoint_iter_*.pth | head -1)
mkdir -p "$OUT"
set -x

# human-pose-estimation-0001: quantized on coco_mini_train images and vtest.avi frames (300 samples, height 256)
$PY scripts/quantize.py --checkpoint-path weights/hpe0001.pth --calibration "$MINI_LABELS" "$VTEST" \
    --images-folder "$MINI_IMAGES" --output "$OUT/hpe0001_int8.xml" --report "$OUT/hpe0001_quantize.json" --no-progress
# demo fps on 300 frames of vtest.avi, one run each: fp32 (--backend auto), Open Model Zoo's IR, ours
$PY scripts/benchmark.py --json-out "$OUT/hpe0001_demo.json" demo --checkpoint-path weights/hpe0001.pth \
    --video "$VTEST" --backends auto --openvino-ir omz="$OMZ_IR" lwpose="$OUT/hpe0001_int8.xml"
# AP on coco_mini_train (val.py's height 368, decoded at map resolution as the demo decodes)
for MODEL in "--checkpoint-path weights/hpe0001.pth" "--openvino-ir $OUT/hpe0001_int8.xml" "--openvino-ir $OMZ_IR \
        --checkpoint-path weights/hpe0001.pth"; do
    # shellcheck disable=SC2086
    $PY val.py --labels "$MINI_LABELS" --images-folder "$MINI_IMAGES" $MODEL --decode-at map \
        --output-name "$OUT/detections.json" --no-progress | tail -1
done

# the quickstart's model: calibrated on its training images and its video at its height (192), scored on its
# held-out split as the quickstart scores it (val.py --height-size 192 --flip --decode-at map)
$PY scripts/quantize.py --checkpoint-path "$QS_CHECKPOINT" --calibration "$QS/data/train/person_keypoints.json" \
    "$QS/data/video/walk.mp4" --images-folder "$QS/data/train/images" --height-size 192 \
    --output "$OUT/quickstart_int8.xml" --report "$OUT/quickstart_quantize.json" --no-progress
for MODEL in "--checkpoint-path $QS_CHECKPOINT" "--openvino-ir $OUT/quickstart_int8.xml"; do
    # shellcheck disable=SC2086
    $PY val.py --labels "$QS/data/val/person_keypoints.json" --images-folder "$QS/data/val/images" $MODEL \
        --height-size 192 --flip --decode-at map --output-name "$OUT/detections.json" --no-progress | tail -1
done
$PY scripts/benchmark.py --json-out "$OUT/quickstart_demo.json" demo --checkpoint-path "$QS_CHECKPOINT" \
    --video "$QS/data/video/walk.mp4" --frames 100 --height-size 192 --backends auto \
    --openvino-ir lwpose="$OUT/quickstart_int8.xml"

# accuracy control: human-pose-estimation-0001 with symmetric activations (--preset performance, which alone loses
# more than 0.01 AP), layers returned to float until the AP on coco_mini_train at val.py's height is within 0.01
$PY scripts/quantize.py --checkpoint-path weights/hpe0001.pth --calibration "$MINI_LABELS" "$VTEST" \
    --images-folder "$MINI_IMAGES" --preset performance --val-labels "$MINI_LABELS" --val-images-folder "$MINI_IMAGES" \
    --val-height-size 368 --max-ap-drop 0.01 --output "$OUT/hpe0001_int8_controlled.xml" \
    --report "$OUT/hpe0001_controlled.json" --no-progress
$PY val.py --labels "$MINI_LABELS" --images-folder "$MINI_IMAGES" --openvino-ir "$OUT/hpe0001_int8_controlled.xml" \
    --decode-at map --output-name "$OUT/detections.json" --no-progress | tail -1
$PY scripts/benchmark.py --json-out "$OUT/hpe0001_controlled_demo.json" demo --checkpoint-path weights/hpe0001.pth \
    --video "$VTEST" --backends auto --openvino-ir omz="$OMZ_IR" controlled="$OUT/hpe0001_int8_controlled.xml"
