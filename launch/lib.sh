#!/usr/bin/env bash
# Shell helpers shared by the launch scripts; sourced, not run (each script sources it from its own launch/ folder).
set -euo pipefail

q() {  # shell-quote each argument where needed (--flag='value' style), joined by spaces
  local out=() a flag
  for a in "$@"; do
    flag=""
    if [[ $a =~ ^(--?[A-Za-z0-9_.-]+=)(.*)$ ]]; then flag=${BASH_REMATCH[1]}; a=${BASH_REMATCH[2]}; fi
    if [[ -n $a && $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=("$flag$a")
    elif [[ $a != *[\$\`\\\"\!]* ]]; then out+=("$flag\"$a\"")
    else out+=("$flag'${a//\'/\'\\\'\'}'"); fi
  done
  printf '%s\n' "${out[*]}"
}

# Datasets that need neither TFDS nor a data_dir: shipped inside the package (mnist5k) or rendered (shapes*).
NO_DOWNLOAD_DATASETS=(mnist5k shapes shapes64)

# resolve_data ROOT CONFIG DATA_DIR [ARG ...]: decide, before anything runs, where the run's data comes from.
# ROOT is the repository (CONFIG's file is relative to it), ARG the program's extra arguments. Sets:
#   dataset    data.name: the last --config.data.name=... of ARG, else the last `dataset="..."` or
#              `data.name = "..."` in CONFIG's file; empty if neither says
#   data_dir   DATA_DIR, or the --config.data.data_dir=... of ARG
#   data_args  (--config.data.data_dir=DATA_DIR) when DATA_DIR is set, else ()
#   tfds       1: the run reads TFDS (a TFDS dataset and no data_dir); 0: it does not; ?: unknown dataset
#   data_note  one line saying which
# Fails (one line on stderr, status 2) when DATA_DIR and an argument --config.data.data_dir=... are both given.
resolve_data() {
  local root=$1 config=$2 dir=$3 arg arg_dir="" line file re='(dataset=|data\.name *= *)"([^"]+)"'
  shift 3
  dataset=""
  for arg in "$@"; do
    case "$arg" in
      --config.data.name=*) dataset=${arg#*=} ;;
      --config.data.data_dir=*) arg_dir=${arg#*=} ;;
    esac
  done
  if [[ -n $dir && -n $arg_dir ]]; then
    echo "error: DATA_DIR=$dir and --config.data.data_dir=$arg_dir: give the data folder once" >&2
    return 2
  fi
  if [[ -z $dataset ]]; then
    file=${config%%:*}
    [[ $file == /* ]] || file="$root/$file"
    if [[ -f $file ]]; then
      while IFS= read -r line || [[ -n $line ]]; do
        [[ $line =~ $re ]] && dataset=${BASH_REMATCH[2]}
      done < "$file"
    fi
  fi
  data_dir=${dir:-$arg_dir}
  data_args=()
  [[ -n $dir ]] && data_args=(--config.data.data_dir="$dir")
  local stem=${dataset//\//_} name
  for name in "${NO_DOWNLOAD_DATASETS[@]}"; do
    if [[ $dataset == "$name" && ( $name == shapes* || -z $data_dir ) ]]; then  # shapes ignore a data_dir
      tfds=0
      data_note="$dataset: $([[ $name == shapes* ]] && echo rendered || echo shipped with the package), no TFDS"
      return 0
    fi
  done
  if [[ -n $data_dir ]]; then
    tfds=0
    data_note="${dataset:-the dataset} from the data_dir $data_dir (npz or IDX files), no TFDS"
  elif [[ -z $dataset ]]; then
    tfds="?"
    data_note="could not tell the dataset of $config (no dataset=\"...\" in ${config%%:*}); set DATA_DIR, or it may need TFDS"
  else
    tfds=1
    data_note="$dataset from TFDS (the tfds extra), or set DATA_DIR to a folder with ${stem}_train.npz + ${stem}_test.npz or its IDX files"
  fi
}

# preflight PYTHON PLATFORM [TFDS_DATASET]: before a run on this machine, check that PYTHON can run the program:
# its dependencies import, its jaxlib has PLATFORM's backend (cuda: a CUDA jaxlib and a visible GPU; cpu:
# nothing to check) and, given TFDS_DATASET, TFDS imports. Otherwise one line on stderr and status 2.
preflight() {
  local python=$1 platform=$2 tfds_dataset=${3:-} msg rc=0
  if ! command -v "$python" >/dev/null 2>&1; then
    echo "error: no python '$python' (PYTHON): make the checkout's venv (python3 -m venv .venv) and" \
      "pip install -e \".[gpu]\" into it, or set PYTHON" >&2
    return 2
  fi
  msg="$(JAX_PLATFORMS="$platform" "$python" - "$python" "$platform" "$tfds_dataset" 2>/dev/null <<'PY'
import importlib.util, pkgutil, re, sys

python, platform, dataset = sys.argv[1:4]
first = platform.split(",")[0]
gpu = first in ("cuda", "gpu")
base = ["gpu"] if gpu else []


def pip(extras):
  return f'{python} -m pip install -e ' + ('".[%s]"' % ",".join(extras) if extras else ".")


missing = [m for m in ("absl", "ml_collections", "jax", "jaxlib", "flax", "optax", "orbax") if not importlib.util.find_spec(m)]
if missing:
  extras = base + (["tfds"] if dataset else [])
  print(f"{python} cannot run dcvae_jax (no module {', '.join(missing)}): {pip(extras)}, or set PYTHON")
  sys.exit(2)
problems, extras = [], []
if first and first != "cpu":
  import jax

  try:
    jax.devices(first)
  except Exception as e:  # a CPU-only jaxlib fails here with a bare AssertionError
    cuda = any(re.fullmatch(r"jax_cuda\d+_(plugin|pjrt)", m.name) for m in pkgutil.iter_modules())
    if gpu and not cuda:
      problems.append("a CPU-only jaxlib (no CUDA backend)")
      extras.append("gpu")
    else:
      why = (str(e).strip().splitlines() or [type(e).__name__])[0]
      print(f"JAX with {python} finds no {first} device ({why}): see nvidia-smi, GPUS, CUDA_VISIBLE_DEVICES")
      sys.exit(2)
if dataset and not importlib.util.find_spec("tensorflow_datasets"):
  problems.append(f"no TFDS, which dataset {dataset} needs")
  extras.append("tfds")
if problems:
  hint = " (or JAX_PLATFORMS=cpu to train on the CPU)" if extras == ["gpu"] else ""
  if "tfds" in extras:
    stem = dataset.replace("/", "_")
    hint = f" (or set DATA_DIR to a folder with {stem}_train.npz + {stem}_test.npz or its IDX files)"
  print(f"{python} has {' and '.join(problems)}: {pip(extras)}{hint}")
  sys.exit(2)
PY
)" || rc=$?
  if ((rc != 0)); then
    [[ -n $msg ]] || msg="$python failed the check before the run (try: $python -c 'import jax; print(jax.devices())')"
    echo "error: ${msg##*$'\n'}" >&2
    return 2
  fi
}
