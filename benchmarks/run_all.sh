#!/usr/bin/env bash
# Runs every benchmark and writes benchmarks/results/*.json (about 30-40 minutes on a quiet 2-core CPU).
#
#   bash benchmarks/run_all.sh                 # PYTHON=/path/to/python to choose the interpreter
#
# Every script waits (up to 15 minutes) for other processes to leave the CPUs alone before it times anything and
# records in its JSON how much CPU other processes used while it ran: on a shared machine, re-run a benchmark
# whose JSON shows foreign_cpu_fraction well above 0.1.
# vs_torch.py / torch_reference.py need torch, which is not a dcvae_jax dependency:
#   pip install torch==2.13.0   (the CPU wheel is enough); they are skipped without it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
R=benchmarks/results
mkdir -p "$R"

# Throughput of the pipeline's compiled step: every model at batch 64, dcvae at 256 (throughput.py per run).
"$PY" benchmarks/throughput_all.py

# Steps fused per compiled call (1, 10, 50, 200), batch 64 and 256.
"$PY" benchmarks/scan.py --json="$R/scan.json"

# K = 10 runs as one vmapped program vs 10 single-run programs, dcvae and vae, MLP 512-256 and 64-32.
"$PY" benchmarks/ensemble.py --json="$R/ensemble.json"

# Where the step's time goes, and the proposed changes, batch 64 and 256.
"$PY" benchmarks/step_variants.py --batch_size=64 --json="$R/step_variants_b64.json"
"$PY" benchmarks/step_variants.py --batch_size=256 --json="$R/step_variants_b256.json"

# XLA CPU flags (one process per measurement).
"$PY" benchmarks/xla_flags.py --batch_size=64 --json="$R/xla_flags_b64.json"

# Against the straightforward PyTorch eager step.
if "$PY" -c "import torch" 2>/dev/null; then
  "$PY" benchmarks/torch_reference.py --json="$R/torch_reference.json"
  "$PY" benchmarks/vs_torch.py --json="$R/vs_torch.json"
else
  echo "torch not installed: skipping torch_reference.py and vs_torch.py (pip install torch==2.13.0)"
fi
