#!/usr/bin/env bash
# Train dcvae_jax on one machine with several GPUs: one process that uses every visible GPU (JAX shards each
# batch over all local devices by itself; no jax.distributed set-up is needed or done).
#
#   launch/multi_gpu.sh [--dry-run] [--config.key=value ...]
#   GPUS=0,1,2,3 CONFIG=configs/mnist.py WORKDIR=workdirs/mnist_4gpu launch/multi_gpu.sh
#
# Needs the package installed with CUDA: `pip install -e ".[gpu]"`. Extra arguments are appended to the
# program's command line; rerunning with the same WORKDIR resumes. DRY_RUN=1 or --dry-run prints the command.
set -euo pipefail

CONFIG="${CONFIG:-configs/mnist.py}"
_stem="$(basename "${CONFIG%%:*}" .py)"; [[ $CONFIG == *:* ]] && _stem+="_${CONFIG#*:}"
WORKDIR="${WORKDIR:-workdirs/${_stem}}"     # relative to the repository root, or absolute
GPUS="${GPUS:-}"                             # e.g. 0,1,2,3 (becomes CUDA_VISIBLE_DEVICES); empty: all GPUs
PYTHON="${PYTHON:-python}"
PLATFORM="${JAX_PLATFORMS:-cuda}"            # fail instead of silently training on CPU
DRY_RUN="${DRY_RUN:-0}"

extra=()
read -ra extra <<< "${EXTRA_ARGS:-}"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    *) extra+=("$arg") ;;
  esac
done

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # q: shell quoting

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# One process: make sure nothing left in the environment turns on multi-process set-up.
cmd=(env -u DCVAE_DISTRIBUTED -u JAX_COORDINATOR_ADDRESS -u JAX_NUM_PROCESSES -u JAX_PROCESS_ID
     JAX_PLATFORMS="$PLATFORM")
[[ -n $GPUS ]] && cmd+=(CUDA_VISIBLE_DEVICES="$GPUS")
cmd+=("$PYTHON" -m dcvae_jax.main --config="$CONFIG" --workdir="$WORKDIR" "${extra[@]}")

if [[ $DRY_RUN == 1 ]]; then
  echo "+ cd $(q "$PWD")"
  echo "+ $(q "${cmd[@]}")"
  exit 0
fi
if [[ $PLATFORM == cuda* ]] && command -v nvidia-smi >/dev/null 2>&1; then
  echo "# GPUs: $(nvidia-smi -L ${GPUS:+-i "$GPUS"} | wc -l) (${GPUS:-all})" >&2
fi
echo "+ $(q "${cmd[@]}")" >&2
exec "${cmd[@]}"
