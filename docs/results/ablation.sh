#!/usr/bin/env bash
# The detection-quality ablation: one named row = one training setting; every row records all six scores.
#   DATA=../shared/data docs/results/ablation.sh DATASET PROTOCOL EPOCHS ROW [ROW ...]
# e.g. DATA=../shared/data docs/results/ablation.sh mnist one_vs_rest 50 paper gray cb gauss_pp
# Workdirs go to $ROOT (default /tmp/dcvae_ablation)/DATASET-PROTOCOL-EPOCHSep-ROW; a finished row is not redone.
# Summarise with: python docs/results/ablation_table.py $ROOT DATASET PROTOCOL EPOCHS
set -euo pipefail
DATASET=$1; PROTOCOL=$2; EPOCHS=$3; shift 3
ROOT=${ROOT:-/tmp/dcvae_ablation}
PY=${PY:-.venv/bin/python}
GRAY="--config.data.binarize=False"
CB="$GRAY --config.model.likelihood=continuous_bernoulli --config.data.dequantize=True"
GPP="$GRAY --config.model.likelihood=gaussian --config.model.gaussian_variance=per_pixel --config.data.dequantize=True"
GGL="$GRAY --config.model.likelihood=gaussian --config.model.gaussian_variance=global --config.data.dequantize=True"
COS="--config.train.lr_schedule=warmup_cosine"
for ROW in "$@"; do
  case $ROW in
    paper)      ARGS="--config.model.name=vae" ;;                       # binarised Bernoulli, the paper's setting
    gray)       ARGS="--config.model.name=vae $GRAY" ;;                 # Bernoulli cross-entropy on grey levels
    cb)         ARGS="--config.model.name=vae $CB" ;;                   # continuous Bernoulli, dequantised
    gauss_pp)   ARGS="--config.model.name=vae $GPP" ;;                  # Gaussian, learned per-pixel variance
    gauss_gl)   ARGS="--config.model.name=vae $GGL" ;;                  # Gaussian, learned global variance
    cosine)     ARGS="--config.model.name=vae $COS" ;;                  # warm-up + cosine schedule alone
    latent4)    ARGS="--config.model.name=vae --config.model.latent_dim=4" ;;
    latent32)   ARGS="--config.model.name=vae --config.model.latent_dim=32" ;;
    wide)       ARGS="--config.model.name=vae --config.model.hidden=(1024,512)" ;;
    cb_cos)     ARGS="--config.model.name=vae $CB $COS" ;;
    gpp_cos)    ARGS="--config.model.name=vae $GPP $COS" ;;
    cb_cos_l4)  ARGS="--config.model.name=vae $CB $COS --config.model.latent_dim=4" ;;
    gpp_cos_l4) ARGS="--config.model.name=vae $GPP $COS --config.model.latent_dim=4" ;;
    cb_cos_l32) ARGS="--config.model.name=vae $CB $COS --config.model.latent_dim=32" ;;
    gpp_cos_l32) ARGS="--config.model.name=vae $GPP $COS --config.model.latent_dim=32" ;;
    *) echo "error: unknown row $ROW" >&2; exit 2 ;;
  esac
  WD=$ROOT/$DATASET-$PROTOCOL-${EPOCHS}ep-$ROW
  [ -f $WD/results.json ] && { echo "$ROW: done"; continue; }
  # shellcheck disable=SC2086
  $PY -m dcvae_jax.main --config=configs/$DATASET.py --workdir=$WD --config.data.data_dir=${DATA:-../shared/data} \
    --config.protocol.name=$PROTOCOL --config.train.num_epochs=$EPOCHS --config.train.progress=False $ARGS
  echo "$ROW $ARGS" > $WD/row.txt
done
