#!/usr/bin/env bash
# Train default-model candidates on a GPU within a time budget, from the repo root.
#   scripts/gpu_default_model.sh MANIFEST BUDGET_SECONDS OUT_DIR [VARIANT=overrides ...]
# One epoch is timed first; each variant then gets as many epochs as fit its share of the
# budget (at most the config's 60), so a short GPU lease still yields finished cosine runs.
set -u
manifest=$1; budget=$2; out=$3; shift 3
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
cfg=configs/default-model.yaml
common=(data.manifest="$manifest" data.cache_dir=/tmp/faceage-cache run.threads=8)
start=$(date +%s)
python -m faceage train --config $cfg "${common[@]}" optim.epochs=1 optim.warmup_epochs=0 \
  --out /tmp/probe >"$out/probe.log" 2>&1 || { tail -20 "$out/probe.log"; exit 1; }
epoch_s=$(python -c "import csv; print(float(list(csv.DictReader(open('/tmp/probe/metrics.csv')))[0]['seconds']))")
n=$#
left=$(( budget - ($(date +%s) - start) ))
epochs=$(python -c "print(max(5, min(60, int(($left / $n - 15) / ($epoch_s * 1.05)))))")
echo "one epoch: ${epoch_s}s; ${n} variants x ${epochs} epochs in ${left}s"
for spec in "$@"; do
  name=${spec%%=*}; over=${spec#*=}
  timeout $(( left / n + 30 )) python -m faceage train --config $cfg "${common[@]}" optim.epochs=$epochs $over \
    --out "$out/$name" >"$out/$name.log" 2>&1
  echo "$name (rc $?):"; grep -E "^(epoch [0-9]+:|done)" "$out/$name.log" | tail -4
done
