#!/usr/bin/env bash
# The numbers in docs/model_card.md: the default model on its UTKFace validation split (aligned
# crops) and on FG-NET through the whole pipeline (detect -> align -> estimate, no FG-NET training).
#   scripts/model_card_numbers.sh [MODEL]     (default: the bundled model)
set -euo pipefail
model=${1:-src/faceage/models/default.safetensors}
split=work/utkface-128/split.csv
[ -f "$split" ] || { echo "make $split first (see configs/default-model.yaml)"; exit 1; }
faceage evaluate --data "$split" --split val --model "$model" --out docs/model-card/utkface-val
faceage evaluate --data ../shared/data/fgnet --format fgnet --model "$model" --out docs/model-card/fgnet
