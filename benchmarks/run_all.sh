#!/usr/bin/env bash
# Runs every benchmark and writes benchmarks/results/*.json (about 45 minutes on a quiet 2-core CPU).
#
#   bash benchmarks/run_all.sh                 # PYTHON=/path/to/python to choose the interpreter
#
# Every script waits (up to $BENCH_MAX_WAIT seconds, default 900) for other processes to leave the CPUs alone
# before it times anything, throws away (and repeats) repetitions during which other processes used more than
# 15% of the CPUs, and records in its JSON how much CPU other processes used. Then
#   python benchmarks/summarize.py             # the markdown tables of README.md
# vs_torch.py / torch_reference.py need torch, which is not a dcvae_jax dependency:
#   pip install torch==2.13.0   (the CPU wheel is enough); they are skipped without it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
R=benchmarks/results
mkdir -p "$R"

# Against the straightforward PyTorch eager step (and the check that it computes the same loss).
if "$PY" -c "import torch" 2>/dev/null; then
  "$PY" benchmarks/vs_torch.py --reps=7 --json="$R/vs_torch.json"
  "$PY" benchmarks/torch_reference.py --json="$R/torch_reference.json"
else
  echo "torch not installed: skipping vs_torch.py and torch_reference.py (pip install torch==2.13.0)"
fi

# Where the step's time goes: variants of the step, batch 64 and 256; and steps_per_call = 1.
"$PY" benchmarks/step_variants.py --batch_size=64 --json="$R/step_variants_b64.json"
"$PY" benchmarks/step_variants.py --batch_size=256 --json="$R/step_variants_b256.json"
for b in 64 256; do
  "$PY" benchmarks/step_variants.py --batch_size=$b --steps_per_call=1 --variants=pipeline,current,cond_noise \
    --json="$R/step_variants_b${b}_spc1.json"
done

# Throughput of the pipeline's compiled step: every model at batch 64, dcvae at 256 (throughput.py, 3 runs each).
"$PY" benchmarks/throughput_all.py

# XLA CPU flags (one process per measurement).
"$PY" benchmarks/xla_flags.py --batch_size=64 --json="$R/xla_flags_b64.json"
"$PY" benchmarks/xla_flags.py --batch_size=256 --flag_sets=default,ynn_dot_only,no_ynn --json="$R/xla_flags_b256.json"
"$PY" benchmarks/xla_flags.py --batch_size=64 --hidden=64,32 --flag_sets=default,ynn_dot_only,no_ynn \
  --json="$R/xla_flags_b64_h64-32.json"

# Steps fused per compiled call (1, 10, 50, 200), batch 64 and 256.
"$PY" benchmarks/scan.py --json="$R/scan.json"

# K = 10 runs in one program, vmapped or mapped (lax.map), vs 10 single-run programs; dcvae and vae, MLP 512-256
# down to 64-32 (where train.ensemble="auto" switches from map to vmap on CPU).
"$PY" benchmarks/ensemble.py --json="$R/ensemble.json"

# A whole 50-epoch dcvae run on the 60,000 MNIST training images (needs mnist_{train,test}.npz or the IDX files
# in DATA_DIR; ../shared/data here).
if [ -n "${DATA_DIR:-../shared/data}" ] && ls "${DATA_DIR:-../shared/data}"/mnist_train.npz >/dev/null 2>&1; then
  "$PY" benchmarks/full_run.py --data_dir="${DATA_DIR:-../shared/data}" --json="$R/full_run.json"
else
  echo "no MNIST files in ${DATA_DIR:-../shared/data}: skipping full_run.py (DATA_DIR=folder with mnist_train.npz)"
fi
