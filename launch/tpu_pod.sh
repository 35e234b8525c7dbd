#!/usr/bin/env bash
# Train dcvae_jax on a Cloud TPU VM (one host or a multi-host pod slice), driven from your own machine.
#
#   launch/tpu_pod.sh [--dry-run] [--config.key=value ...]
#   TPU_NAME=my-tpu ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 CONFIG=configs/mnist.py \
#     WORKDIR=gs://my-bucket/dcvae/mnist launch/tpu_pod.sh
#
# Steps (STEPS, default "create install run fetch"; "delete" is also available):
#   create   reuse the TPU VM if `describe` finds it, else create it
#   install  copy this checkout (or clone REPO_URL) to every worker (--worker=all) and `pip install -e .[tpu]`
#   run      run `python -m dcvae_jax.main --config=... --workdir=...` on every worker at once, one JAX process
#            per worker, DCVAE_DISTRIBUTED=1 (jax.distributed.initialize() needs no arguments on a TPU pod)
#   fetch    copy worker 0's workdir (or the gs:// WORKDIR) to RESULTS_DIR on this machine
#   delete   delete the TPU VM
# DRY_RUN=1 or --dry-run prints every command instead of running it (gcloud need not be installed).
# Extra arguments are appended to the program's command line. Rerunning resumes from the workdir.
set -euo pipefail

TPU_NAME="${TPU_NAME:-dcvae-tpu}"
ZONE="${ZONE:-us-central2-b}"
PROJECT="${PROJECT:-}"                          # empty: gcloud's configured project
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"  # v4-8 is one host; v4-32 is 4 hosts
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"  # v5e: v2-alpha-tpuv5-lite, v6e: v2-alpha-tpuv6e
SPOT="${SPOT:-0}"                               # 1: create a spot (preemptible) TPU VM
CONFIG="${CONFIG:-configs/mnist.py}"            # path inside the repo, optionally with :argument
# gs://...: the run's workdir lives in the bucket (synced to every worker before the run, from worker 0 after
# it; the TPU VM's service account needs write access). Anything else: a path on the workers, relative to
# the code folder.
_stem="$(basename "${CONFIG%%:*}" .py)"; [[ $CONFIG == *:* ]] && _stem+="_${CONFIG#*:}"
WORKDIR="${WORKDIR:-workdirs/${_stem}}"
RESULTS_DIR="${RESULTS_DIR:-workdirs/tpu_${TPU_NAME}_${_stem}}"  # on this machine, filled by "fetch"
REPO_URL="${REPO_URL:-}"                        # empty: copy this checkout with `tpu-vm scp --worker=all`
REPO_REF="${REPO_REF:-}"                        # with REPO_URL: branch, tag or commit to check out
REMOTE_DIR="${REMOTE_DIR:-dcvae_jax}"           # code folder on the workers, relative to the home folder
PYTHON="${PYTHON:-python3}"                     # on the workers
PIP_EXTRAS="${PIP_EXTRAS:-tpu}"
EXTRA_ARGS="${EXTRA_ARGS:-}"                    # more --config.key=value flags (split on whitespace)
STEPS="${STEPS:-create install run fetch}"
DRY_RUN="${DRY_RUN:-0}"

extra=()
read -ra extra <<< "$EXTRA_ARGS"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) extra+=("$arg") ;;
  esac
done

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

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

x() {  # run a command (traced on stderr), or only print it when DRY_RUN=1
  if [[ $DRY_RUN == 1 ]]; then echo "+ $(q "$@")"; else echo "+ $(q "$@")" >&2; "$@"; fi
}

gflags=(--zone="$ZONE")
[[ -n $PROJECT ]] && gflags+=(--project="$PROJECT")
tpu=(gcloud compute tpus tpu-vm)

on_workers() {  # on_workers WORKER SHELL-COMMAND: run a shell command on worker(s) WORKER (a number or "all")
  x "${tpu[@]}" ssh "$TPU_NAME" "${gflags[@]}" --worker="$1" --command="$2"
}

is_gcs=0; [[ $WORKDIR == gs://* ]] && is_gcs=1
if [[ $is_gcs == 1 ]]; then
  run_dir="workdirs/gcs_$(basename "${WORKDIR%/}")"  # the workers' local copy, relative to REMOTE_DIR
else
  run_dir="$WORKDIR"
fi
if [[ $run_dir == /* ]]; then remote_run_dir="$run_dir"; else remote_run_dir="$REMOTE_DIR/$run_dir"; fi

step_create() {
  local create=("${tpu[@]}" create "$TPU_NAME" "${gflags[@]}" --accelerator-type="$ACCELERATOR_TYPE"
                --version="$RUNTIME_VERSION")
  [[ $SPOT == 1 ]] && create+=(--spot)
  local describe=("${tpu[@]}" describe "$TPU_NAME" "${gflags[@]}")
  if [[ $DRY_RUN == 1 ]]; then
    echo "+ $(q "${describe[@]}") >/dev/null || $(q "${create[@]}")"
  elif "${describe[@]}" >/dev/null 2>&1; then
    echo "# reusing TPU VM $TPU_NAME" >&2
  else
    x "${create[@]}"
  fi
}

step_install() {
  local get
  if [[ -n $REPO_URL ]]; then
    get="if [ -d $(q "$REMOTE_DIR/.git") ]; then git -C $(q "$REMOTE_DIR") fetch -q --all --tags; \
else git clone -q $(q "$REPO_URL") $(q "$REMOTE_DIR"); fi"
    [[ -n $REPO_REF ]] && get+=" && git -C $(q "$REMOTE_DIR") checkout -q $(q "$REPO_REF")"
    [[ -z $REPO_REF ]] && get+=" && git -C $(q "$REMOTE_DIR") pull -q --ff-only"
  else
    local tarball
    tarball="${TMPDIR:-/tmp}/dcvae_jax_code_$$.tgz"
    x tar -czf "$tarball" -C "$REPO_ROOT" --exclude=.git --exclude=workdirs --exclude='*.egg-info' \
      --exclude=__pycache__ --exclude=.venv --exclude=venv --exclude=.pytest_cache .
    x "${tpu[@]}" scp "$tarball" "$TPU_NAME:dcvae_jax_code.tgz" "${gflags[@]}" --worker=all
    [[ $DRY_RUN == 1 ]] || rm -f "$tarball"
    get="mkdir -p $(q "$REMOTE_DIR") && tar -xzf dcvae_jax_code.tgz -C $(q "$REMOTE_DIR") && rm dcvae_jax_code.tgz"
  fi
  on_workers all "$get && cd $(q "$REMOTE_DIR") && $(q "$PYTHON") -m pip install -q -e $(q ".[$PIP_EXTRAS]")"
}

step_run() {
  local cmd=("$PYTHON" -m dcvae_jax.main --config="$CONFIG" --workdir="$run_dir" "${extra[@]}")
  local pre="cd $(q "$REMOTE_DIR")"
  if [[ $is_gcs == 1 ]]; then  # bring down what an earlier (interrupted) run left, so the run resumes
    pre+=" && mkdir -p $(q "$run_dir") && if gcloud storage ls $(q "$WORKDIR") >/dev/null 2>&1; then \
gcloud storage rsync -r $(q "$WORKDIR") $(q "$run_dir"); fi"
  fi
  local rc=0
  on_workers all "$pre && DCVAE_DISTRIBUTED=1 $(q "${cmd[@]}")" || rc=$?
  if [[ $is_gcs == 1 ]]; then  # keep what there is, even after a failure
    on_workers 0 "cd $(q "$REMOTE_DIR") && gcloud storage rsync -r $(q "$run_dir") $(q "$WORKDIR")"
  fi
  return "$rc"
}

step_fetch() {
  x mkdir -p "$RESULTS_DIR"
  if [[ $is_gcs == 1 ]]; then
    x gcloud storage rsync -r "$WORKDIR" "$RESULTS_DIR"
  else
    local tarball="${TMPDIR:-/tmp}/dcvae_jax_results_$$.tgz"
    on_workers 0 "tar -czf dcvae_jax_results.tgz -C $(q "$remote_run_dir") ."
    x "${tpu[@]}" scp "$TPU_NAME:dcvae_jax_results.tgz" "$tarball" "${gflags[@]}" --worker=0
    x tar -xzf "$tarball" -C "$RESULTS_DIR"
    [[ $DRY_RUN == 1 ]] || rm -f "$tarball"
  fi
  [[ $DRY_RUN == 1 ]] || echo "# results: $RESULTS_DIR/results.json" >&2
}

step_delete() {
  x "${tpu[@]}" delete "$TPU_NAME" "${gflags[@]}" --quiet
}

for step in $STEPS; do
  case "$step" in
    create|install|run|fetch|delete) echo "# step: $step" ;;
    *) echo "error: unknown step '$step' (expected create, install, run, fetch, delete)" >&2; exit 2 ;;
  esac
  "step_$step"
done
