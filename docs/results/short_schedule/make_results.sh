#!/usr/bin/env bash
# The real-data tables in docs/results/short_schedule/, made with the exact commands below on a 2-core CPU (no GPU).
# DATA points at a folder with mnist_{train,test}.npz and fashion_mnist_{train,test}.npz (../shared/data here).
# Epoch counts are reduced from the paper's 50 to fit a 2-core CPU; each table says what it used.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
run() {  # dataset protocol epochs models...
  local ds=$1 protocol=$2 epochs=$3; shift 3
  local models; models=$(printf "'%s'," "$@")
  $PY -m dcvae_jax.main --config=configs/${ds}.py --mode=table --workdir=workdirs/results/${ds}_${protocol} \
    --config.data.data_dir=$DATA --config.protocol.name=$protocol --config.train.num_epochs=$epochs \
    --config.table.models="(${models})" --config.table.figures=False --config.train.progress=False
  cp workdirs/results/${ds}_${protocol}/results.{md,csv,json} docs/results/short_schedule/ 2>/dev/null || true
  for f in md csv json; do mv docs/results/short_schedule/results.$f docs/results/short_schedule/${ds}_${protocol}.$f; done
}
"$@"
