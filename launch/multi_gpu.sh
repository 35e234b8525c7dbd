#!/usr/bin/env bash
# Train dcvae_jax on one machine with several GPUs: one process that uses every visible GPU (JAX shards each
# batch over all local devices by itself; no jax.distributed set-up is needed or done).
#
#   launch/multi_gpu.sh [--dry-run] [--config.key=value ...]
#   GPUS=0,1,2,3 CONFIG=configs/mnist.py WORKDIR=workdirs/mnist_4gpu launch/multi_gpu.sh
#   DATA_DIR=/data/mnist launch/multi_gpu.sh       # npz / IDX files instead of TFDS
#
# Needs the package installed with CUDA: `pip install -e ".[gpu]"` (and the tfds extra, `".[gpu,tfds]"`, for a
# TFDS dataset such as the default configs/mnist.py unless DATA_DIR names a folder of npz / IDX files). The
# checkout's .venv is used when there is one. Before the run, one line says what is missing (a CPU-only jaxlib,
# TFDS, the package's dependencies) and the script fails. Extra arguments are appended to the program's command
# line; rerunning with the same WORKDIR resumes. DRY_RUN=1 or --dry-run prints the command.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONFIG="${CONFIG:-configs/mnist.py}"
_stem="$(basename "${CONFIG%%:*}" .py)"; [[ $CONFIG == *:* ]] && _stem+="_${CONFIG#*:}"
WORKDIR="${WORKDIR:-workdirs/${_stem}}"     # relative to the repository root, or absolute
GPUS="${GPUS:-}"                             # e.g. 0,1,2,3 (becomes CUDA_VISIBLE_DEVICES); empty: all GPUs
_python=python; [[ -x .venv/bin/python ]] && _python=.venv/bin/python
PYTHON="${PYTHON:-$_python}"                 # the checkout's .venv if it has one
PLATFORM="${JAX_PLATFORMS:-cuda}"            # fail instead of silently training on CPU
DATA_DIR="${DATA_DIR:-}"                     # npz / IDX files instead of TFDS (relative to the repository root)
DRY_RUN="${DRY_RUN:-0}"

extra=()
read -ra extra <<< "${EXTRA_ARGS:-}"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    *) extra+=("$arg") ;;
  esac
done

source launch/lib.sh  # q: shell quoting; resolve_data: TFDS or a data_dir; preflight: can PYTHON run it here

resolve_data "$PWD" "$CONFIG" "$DATA_DIR" "${extra[@]}"
# One process: make sure nothing left in the environment turns on multi-process set-up.
cmd=(env -u DCVAE_DISTRIBUTED -u JAX_COORDINATOR_ADDRESS -u JAX_NUM_PROCESSES -u JAX_PROCESS_ID
     JAX_PLATFORMS="$PLATFORM")
[[ -n $GPUS ]] && cmd+=(CUDA_VISIBLE_DEVICES="$GPUS")
cmd+=("$PYTHON" -m dcvae_jax.main --config="$CONFIG" --workdir="$WORKDIR" "${data_args[@]}" "${extra[@]}")

if [[ $DRY_RUN == 1 ]]; then
  echo "# data: $data_note"
  echo "+ cd $(q "$PWD")"
  echo "+ $(q "${cmd[@]}")"
  exit 0
fi
if [[ -n $data_dir && ! -d $data_dir ]]; then
  echo "error: the data_dir $data_dir is not a folder (relative paths start at $PWD)" >&2
  exit 2
fi
tfds_dataset=""; [[ $tfds == 1 ]] && tfds_dataset="$dataset"
[[ -n $GPUS ]] && export CUDA_VISIBLE_DEVICES="$GPUS"
preflight "$PYTHON" "$PLATFORM" "$tfds_dataset"
echo "# data: $data_note" >&2
if [[ $PLATFORM == cuda* ]] && command -v nvidia-smi >/dev/null 2>&1; then
  echo "# GPUs: $(nvidia-smi -L ${GPUS:+-i "$GPUS"} | wc -l) (${GPUS:-all})" >&2
fi
echo "+ $(q "${cmd[@]}")" >&2
exec "${cmd[@]}"
