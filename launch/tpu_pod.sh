#!/usr/bin/env bash
# Train dcvae_jax on a Cloud TPU VM (one host or a multi-host pod slice), driven from your own machine.
#
#   launch/tpu_pod.sh [--dry-run] [--config.key=value ...]
#   TPU_NAME=my-tpu ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 CONFIG=configs/mnist.py \
#     WORKDIR=gs://my-bucket/dcvae/mnist launch/tpu_pod.sh
#
# The workdir is a Cloud Storage folder that every host shares (default gs://<project>-dcvae/dcvae/<config>):
# each worker mounts the bucket with Cloud Storage FUSE (gcsfuse) and the program writes its checkpoints,
# metrics and results straight into it, so a preempted or deleted VM loses nothing; rerunning resumes there.
# The program runs detached on every worker (setsid nohup, log in <REMOTE_DIR>/logs/run.log), so it goes on
# when this script or its ssh session ends; `STEPS="wait fetch"` picks it up again.
#
# Steps (STEPS, default "create install run wait fetch"; "logs", "stop" and "delete" are also available):
#   create   the bucket if missing; reuse the TPU VM if `describe` finds it (recreate it if preempted), else
#            create it
#   install  copy this checkout (or clone REPO_URL) to every worker (--worker=all), `pip install -e .[tpu]`
#            (`.[tpu,tfds]` when the config reads a TFDS dataset and DATA_DIR is not set), and install gcsfuse
#            where it is missing
#   run      mount the bucket and start `python -m dcvae_jax.main --config=... --workdir=...` detached on every
#            worker at once, one JAX process per worker, DCVAE_DISTRIBUTED=1 (jax.distributed.initialize()
#            needs no arguments on a TPU pod); a worker whose run is still alive is left alone
#   wait     wait on worker 0 until its run ends, print the end of its log, fail if the run failed
#   fetch    copy the workdir (without checkpoints) to RESULTS_DIR on this machine
#   logs     print the end of every worker's log;  stop: end the run on every worker;  delete: delete the VM
# Data: mnist5k and shapes need nothing; a TFDS dataset (mnist, fashion_mnist, kmnist, emnist/*) is downloaded by
# every worker, with the tfds extra that "install" adds, unless DATA_DIR names a folder of npz / IDX files:
# gs://bucket/path (mounted on every worker like the workdir), a folder of this checkout (copied with it) or an
# absolute path on every worker. This is decided before any step runs.
# DRY_RUN=1 or --dry-run prints every command instead of running it (gcloud need not be installed).
# Extra arguments are appended to the program's command line.
set -euo pipefail

TPU_NAME="${TPU_NAME:-dcvae-tpu}"
ZONE="${ZONE:-us-central2-b}"
PROJECT="${PROJECT:-}"                          # empty: gcloud's configured project
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"  # v4-8 is one host; v4-32 is 4 hosts
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"  # v5e: v2-alpha-tpuv5-lite, v6e: v2-alpha-tpuv6e
SPOT="${SPOT:-0}"                               # 1: create a spot (preemptible) TPU VM
CONFIG="${CONFIG:-configs/mnist.py}"            # path inside the repo, optionally with :argument
_stem="$(basename "${CONFIG%%:*}" .py)"; [[ $CONFIG == *:* ]] && _stem+="_${CONFIG#*:}"
BUCKET="${BUCKET:-}"                            # empty: <project>-dcvae (created by "create" if missing)
# gs://bucket/path (default gs://$BUCKET/dcvae/<config>): shared by every host, mounted on each worker under
# MOUNT_ROOT; the TPU VM's service account needs write access. Anything else: a folder on each worker,
# relative to the code folder (only for one-host slices: the hosts of a pod would not share it).
WORKDIR="${WORKDIR:-}"
MOUNT_ROOT="${MOUNT_ROOT:-/tmp/gcs}"             # on the workers: gs://bucket is mounted at MOUNT_ROOT/bucket
POLL_SECONDS="${POLL_SECONDS:-60}"              # "wait": how often worker 0 looks whether its run has ended
RESULTS_DIR="${RESULTS_DIR:-workdirs/tpu_${TPU_NAME}_${_stem}}"  # on this machine, filled by "fetch"
REPO_URL="${REPO_URL:-}"                        # empty: copy this checkout with `tpu-vm scp --worker=all`
REPO_REF="${REPO_REF:-}"                        # with REPO_URL: branch, tag or commit to check out
REMOTE_DIR="${REMOTE_DIR:-dcvae_jax}"           # code folder on the workers, relative to the home folder
PYTHON="${PYTHON:-python3}"                     # on the workers
PIP_EXTRAS="${PIP_EXTRAS:-tpu}"
DATA_DIR="${DATA_DIR:-}"                        # npz / IDX files instead of TFDS: gs://..., checkout folder, or /abs
EXTRA_ARGS="${EXTRA_ARGS:-}"                    # more --config.key=value flags (split on whitespace)
STEPS="${STEPS:-create install run wait fetch}"
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

source "$REPO_ROOT/launch/lib.sh"  # q: shell quoting; resolve_data: TFDS or a data_dir

x() {  # run a command (traced on stderr), or only print it when DRY_RUN=1
  if [[ $DRY_RUN == 1 ]]; then echo "+ $(q "$@")"; else echo "+ $(q "$@")" >&2; "$@"; fi
}

gflags=(--zone="$ZONE")
[[ -n $PROJECT ]] && gflags+=(--project="$PROJECT")
tpu=(gcloud compute tpus tpu-vm)

on_workers() {  # on_workers WORKER SHELL-COMMAND: run a shell command on worker(s) WORKER (a number or "all")
  x "${tpu[@]}" ssh "$TPU_NAME" "${gflags[@]}" --worker="$1" --command="$2"
}

# The data, decided before any step runs: TFDS (the tfds extra on every worker) or DATA_DIR's npz / IDX files,
# as the workers see them.
worker_data_dir="$DATA_DIR"
if [[ $DATA_DIR == gs://* ]]; then
  _dpath="${DATA_DIR#gs://}"; _dpath="${_dpath%/}"
  worker_data_dir="$MOUNT_ROOT/${_dpath}"  # its bucket is mounted there, as the workdir's is
elif [[ -n $DATA_DIR && $DATA_DIR != /* && -z $REPO_URL ]]; then  # copied to the workers with this checkout
  _root="$(cd "$REPO_ROOT" && pwd -P)"
  _real="$(cd "$REPO_ROOT/$DATA_DIR" 2>/dev/null && pwd -P || true)"  # empty if missing; symlinks resolved
  _rel="${_real#"$_root"/}"; [[ $_real == "$_root" ]] && _rel=.
  case "$_rel" in  # missing, outside the checkout, or in a folder the copy leaves out
    ""|/*|.git|.git/*|workdirs|workdirs/*|.venv|.venv/*|venv|venv/*) _copied=0 ;;
    *) _copied=1 ;;
  esac
  if [[ $_copied == 0 ]]; then
    echo "error: DATA_DIR=$DATA_DIR is not a folder that install copies from this checkout; use gs://bucket/path," \
      "a folder of the checkout, or an absolute path that exists on every worker" >&2
    exit 2
  fi
fi
resolve_data "$REPO_ROOT" "$CONFIG" "$worker_data_dir" "${extra[@]}"
extras="$PIP_EXTRAS"
if [[ $tfds != 0 && ",$extras," != *,tfds,* ]]; then extras+="${extras:+,}tfds"; fi
echo "# data: $data_note$([[ $DATA_DIR == gs://* ]] && echo " (gcsfuse mount of ${DATA_DIR%/})")"
[[ $tfds == "?" ]] && echo "# data: installing the tfds extra in case the config reads TFDS"

if [[ -z $WORKDIR ]]; then
  if [[ -z $BUCKET ]]; then
    project_id="$PROJECT"
    if [[ -z $project_id && $DRY_RUN == 1 ]]; then
      project_id="PROJECT"
      echo "# dry run: PROJECT is not set; a real run takes it from \`gcloud config get-value project\`"
    elif [[ -z $project_id ]]; then
      project_id="$(gcloud config get-value project 2>/dev/null || true)"
      [[ -n $project_id ]] || { echo "error: no Google Cloud project: set PROJECT, BUCKET or WORKDIR" >&2; exit 2; }
    fi
    BUCKET="${project_id//:/-}-dcvae"
  fi
  WORKDIR="gs://$BUCKET/dcvae/$_stem"
fi
is_gcs=0; [[ $WORKDIR == gs://* ]] && is_gcs=1
if [[ $is_gcs == 1 ]]; then
  _path="${WORKDIR#gs://}"; _path="${_path%/}"
  BUCKET="${_path%%/*}"
  mount_dir="$MOUNT_ROOT/$BUCKET"
  run_dir="$mount_dir"; [[ $_path == */* ]] && run_dir+="/${_path#*/}"  # the workers' view of WORKDIR
else
  run_dir="$WORKDIR"
fi
if [[ $run_dir == /* ]]; then remote_run_dir="$run_dir"; else remote_run_dir="$REMOTE_DIR/$run_dir"; fi
echo "# workdir: $WORKDIR$([[ $is_gcs == 1 ]] && echo " (every worker: $run_dir, gcsfuse mount of gs://$BUCKET)")"
mounts=()  # buckets every worker mounts at MOUNT_ROOT/<bucket>: the workdir's, DATA_DIR's
[[ $is_gcs == 1 ]] && mounts+=("$BUCKET")
if [[ $DATA_DIR == gs://* ]]; then
  _dbucket="${DATA_DIR#gs://}"; _dbucket="${_dbucket%%/*}"
  [[ $is_gcs == 1 && $_dbucket == "$BUCKET" ]] || mounts+=("$_dbucket")
fi

step_create() {
  if [[ $is_gcs == 1 ]]; then  # the bucket, in the TPU's region
    local bdescribe=(gcloud storage buckets describe "gs://$BUCKET") bcreate=(gcloud storage buckets create
                     "gs://$BUCKET" --location="${ZONE%-*}" --uniform-bucket-level-access)
    [[ -n $PROJECT ]] && bdescribe+=(--project="$PROJECT") && bcreate+=(--project="$PROJECT")
    if [[ $DRY_RUN == 1 ]]; then
      echo "+ $(q "${bdescribe[@]}") >/dev/null || $(q "${bcreate[@]}")"
    elif "${bdescribe[@]}" >/dev/null 2>&1; then
      echo "# reusing bucket gs://$BUCKET" >&2
    else
      x "${bcreate[@]}"
    fi
  fi
  local create=("${tpu[@]}" create "$TPU_NAME" "${gflags[@]}" --accelerator-type="$ACCELERATOR_TYPE"
                --version="$RUNTIME_VERSION")
  [[ $SPOT == 1 ]] && create+=(--spot)
  local describe=("${tpu[@]}" describe "$TPU_NAME" "${gflags[@]}" --format="value(state)")
  local state
  if [[ $DRY_RUN == 1 ]]; then
    echo "+ $(q "${describe[@]}") >/dev/null || $(q "${create[@]}")"
  elif state="$("${describe[@]}" 2>/dev/null)"; then
    if [[ $state == PREEMPTED || $state == TERMINATED ]]; then  # a spot VM that was taken back: start anew
      x "${tpu[@]}" delete "$TPU_NAME" "${gflags[@]}" --quiet
      x "${create[@]}"
    else
      echo "# reusing TPU VM $TPU_NAME ($state)" >&2
    fi
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
  local fuse=""
  if ((${#mounts[@]})); then  # Cloud Storage FUSE, from Google's apt repository, where it is missing
    fuse="{ command -v gcsfuse >/dev/null || { echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] \
https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list \
>/dev/null && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee \
/usr/share/keyrings/cloud.google.asc >/dev/null && sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse; }; } && "
  fi
  on_workers all "$get && ${fuse}cd $(q "$REMOTE_DIR") && $(q "$PYTHON") -m pip install -q -e $(q ".[$extras]")"
}

step_run() {
  # On every worker: mount the bucket (gs:// workdir), then start the program in its own session (setsid:
  # no SIGHUP when the ssh session closes; nohup as well), its output in logs/run.log, its pid (= its session
  # id) in logs/run.pid and, when it ends, its exit status in logs/run.exit (all in REMOTE_DIR, on the worker's
  # own disk).
  local cmd=("$PYTHON" -m dcvae_jax.main --config="$CONFIG" --workdir="$run_dir" "${data_args[@]}" "${extra[@]}")
  local pre="cd $(q "$REMOTE_DIR") && mkdir -p logs" bucket
  for bucket in "${mounts[@]}"; do pre+=" $(q "$MOUNT_ROOT/$bucket")"; done
  for bucket in "${mounts[@]}"; do
    pre+=" && { mountpoint -q $(q "$MOUNT_ROOT/$bucket") || gcsfuse --implicit-dirs $(q "$bucket") \
$(q "$MOUNT_ROOT/$bucket"); }"
  done
  local job="$(q "${cmd[@]}"); echo \$? > logs/run.exit"
  on_workers all "$pre && if [ -f logs/run.pid ] && kill -0 \"\$(cat logs/run.pid)\" 2>/dev/null; then \
echo \"\$(hostname): already running (pid \$(cat logs/run.pid))\"; else rm -f logs/run.exit; \
DCVAE_DISTRIBUTED=1 setsid nohup bash -c $(q "$job") > logs/run.log 2>&1 < /dev/null & \
echo \$! > logs/run.pid; echo \"\$(hostname): started, log $(q "$REMOTE_DIR")/logs/run.log\"; fi"
}

step_wait() {  # worker 0's run: wait for its exit status, show the end of its log, return its status
  on_workers 0 "cd $(q "$REMOTE_DIR") && while [ ! -f logs/run.exit ]; do \
if ! { [ -f logs/run.pid ] && kill -0 \"\$(cat logs/run.pid)\" 2>/dev/null; }; then \
echo 'no run is going on and none has ended' >&2; exit 3; fi; sleep $(q "$POLL_SECONDS"); done; \
tail -n 30 logs/run.log; exit \"\$(cat logs/run.exit)\""
}

step_logs() {
  on_workers all "cd $(q "$REMOTE_DIR") && echo \"== \$(hostname)\" && tail -n 20 logs/run.log"
}

step_stop() {  # SIGTERM: the program saves a checkpoint and exits
  on_workers all "cd $(q "$REMOTE_DIR") && if [ -f logs/run.pid ]; then pkill -TERM -s \"\$(cat logs/run.pid)\" || true; fi"
}

step_fetch() {
  x mkdir -p "$RESULTS_DIR"
  if [[ $is_gcs == 1 ]]; then
    x gcloud storage rsync -r --exclude="^checkpoints/" "$WORKDIR" "$RESULTS_DIR"
  else
    local tarball="${TMPDIR:-/tmp}/dcvae_jax_results_$$.tgz"
    on_workers 0 "tar -czf dcvae_jax_results.tgz --exclude=./checkpoints -C $(q "$remote_run_dir") ."
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
    create|install|run|wait|fetch|logs|stop|delete) echo "# step: $step" ;;
    *) echo "error: unknown step '$step' (expected create, install, run, wait, fetch, logs, stop, delete)" >&2
       exit 2 ;;
  esac
  "step_$step"
done
