#!/usr/bin/env bash
# The detection-quality ablation: one row = one training setting, named by "+"-joined changes to the paper's
# setting (VAE, MLP 512-256, latent 10, binarised Bernoulli, Adam 1e-3 constant, batch 64). Every row records
# all seven scores (results.json auroc_by_score).
#   DATA=../shared/data docs/results/ablation.sh DATASET PROTOCOL EPOCHS ROW [ROW ...]
# e.g. DATA=../shared/data docs/results/ablation.sh mnist one_vs_rest 50 paper cb gpp cos cb+cos
# Changes: paper (none), gray (Bernoulli cross-entropy on grey levels), cb (continuous Bernoulli on dequantised
# grey levels), gpp / ggl (Gaussian with learned per-pixel / global variance, dequantised), cos (warm-up +
# cosine schedule), l<N> (latent size N), wide (MLP 1024-512), conv (stride-2 4x4 convolutions of 32 and 64
# channels, then dense 256; the decoder mirrors it), m:<model> (another model), s<N> (seed N), n<N> (seeds
# seed..seed+N-1 as N runs of one job, trained together),
# strat<N> (stratified batches, N per condition), tc<N> (the TC weight tc_beta = N of beta_tcvae and dcvae),
# k<N> (latent_knn's mean distance to the N nearest training codes, eval.knn_neighbours: a scoring change only),
# j2k (complexity's L(x) from lossless JPEG 2000, eval.complexity_compressor=jpeg2000), iw<N> (the iwae bound's
# K = N samples, eval.iwae_samples; an EXTRA --config.eval.iwae_samples after it wins), ref<N> (N normal training
# images standardise the sums, eval.reference_examples): scoring changes only.
# EXTRA: more --config flags for every row.
# Workdirs go to $ROOT (default /tmp/dcvae_ablation)/DATASET-PROTOCOL-EPOCHSep-ROW. A finished row is not retrained:
# the job reuses its results, or scores it again from its checkpoints when a scoring setting (EXTRA) changed.
# Summarise with: python -m dcvae_jax.report.ablation $ROOT DATASET PROTOCOL EPOCHS
set -euo pipefail
DATASET=$1; PROTOCOL=$2; EPOCHS=$3; shift 3
ROOT=${ROOT:-/tmp/dcvae_ablation}
PY=${PY:-.venv/bin/python}
GRAY="--config.data.binarize=False"
for ROW in "$@"; do
  ARGS="--config.model.name=vae"
  IFS='+' read -ra TOKENS <<< "$ROW"
  for T in "${TOKENS[@]}"; do
    case $T in
      paper) ;;
      gray) ARGS="$ARGS $GRAY" ;;
      cb)   ARGS="$ARGS $GRAY --config.model.likelihood=continuous_bernoulli --config.data.dequantize=True" ;;
      gpp)  ARGS="$ARGS $GRAY --config.model.likelihood=gaussian --config.model.gaussian_variance=per_pixel --config.data.dequantize=True" ;;
      ggl)  ARGS="$ARGS $GRAY --config.model.likelihood=gaussian --config.model.gaussian_variance=global --config.data.dequantize=True" ;;
      cos)  ARGS="$ARGS --config.train.lr_schedule=warmup_cosine" ;;
      wide) ARGS="$ARGS --config.model.hidden=(1024,512)" ;;
      conv) ARGS="$ARGS --config.model.arch=conv --config.model.hidden=(32,64,256)" ;;
      l[0-9]*) ARGS="$ARGS --config.model.latent_dim=${T#l}" ;;
      s[0-9]*) ARGS="$ARGS --config.seed=${T#s}" ;;
      n[0-9]*) ARGS="$ARGS --config.num_seeds=${T#n}" ;;
      m:*)  ARGS="$ARGS --config.model.name=${T#m:}" ;;
      strat[0-9]*) ARGS="$ARGS --config.train.batch_sampling=stratified --config.train.per_condition=${T#strat}" ;;
      k[0-9]*) ARGS="$ARGS --config.eval.knn_neighbours=${T#k}" ;;
      j2k)  ARGS="$ARGS --config.eval.complexity_compressor=jpeg2000" ;;
      iw[0-9]*) ARGS="$ARGS --config.eval.iwae_samples=${T#iw}" ;;
      ref[0-9]*) ARGS="$ARGS --config.eval.reference_examples=${T#ref}" ;;
      tc[0-9]*) ARGS="$ARGS --config.model.beta_tcvae.tc_beta=${T#tc} --config.model.dcvae.tc_beta=${T#tc}" ;;
      *) echo "error: unknown change '$T' in row '$ROW'" >&2; exit 2 ;;
    esac
  done
  WD=$ROOT/$DATASET-$PROTOCOL-${EPOCHS}ep-$ROW
  # shellcheck disable=SC2086
  $PY -m dcvae_jax.main --config=configs/$DATASET.py --workdir=$WD --config.data.data_dir=${DATA:-../shared/data} \
    --config.protocol.name=$PROTOCOL --config.train.num_epochs=$EPOCHS --config.train.progress=False $ARGS \
    ${EXTRA:-}
  echo "$ROW $ARGS ${EXTRA:-}" > $WD/row.txt
done
