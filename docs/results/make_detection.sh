#!/usr/bin/env bash
# Reproduces docs/results/detection.md: the detection-quality ablation and the dCVAE fair comparison.
#   DATA=../shared/data ROOT=/tmp/dcvae_ablation docs/results/make_detection.sh run      # train (hours on 2 cores)
#   ROOT=/tmp/dcvae_ablation docs/results/make_detection.sh tables                       # print the tables
#   ... make_detection.sh table1 / table1-tables: Table 1 (every model), train / print
#   ... make_detection.sh fair / fair-tables: dCVAE's fair test (seeds, 50 epochs, Fashion-MNIST), train / print
# Runs resume: rerun after an interruption.
set -euo pipefail
cd "$(dirname "$0")/../.."
export ROOT=${ROOT:-/tmp/dcvae_ablation}
PY=${PY:-.venv/bin/python}
T="$PY -m dcvae_jax.report.ablation"
IW="--config.eval.iwae_samples=8 --config.eval.iwae_chunk=8"   # leave-one-out rows: K = 8 keeps scoring short
case ${1:-tables} in
  run)
    docs/results/ablation.sh mnist one_vs_rest 50 paper cb gpp gpp+cos paper+s1 paper+s2
    docs/results/ablation.sh fashion_mnist one_vs_rest 50 paper cb gpp gpp+s1 gpp+s2
    docs/results/ablation.sh mnist leave_one_out 10 paper gpp
    ROOT=$ROOT/fair EXTRA="$IW" \
      docs/results/ablation.sh mnist leave_one_out 10 paper m:cvae m:dcvae m:dcvae+strat32 m:beta_tcvae
    ;;
  table1)  # every model, the paper's setting (binarised MNIST); FactorVAE / RF-VAE with a 2 x 256 discriminator
    SMALL_D="--config.model.factor_vae.disc_layers=2 --config.model.factor_vae.disc_width=256 --config.model.rf_vae.disc_layers=2 --config.model.rf_vae.disc_width=256"
    docs/results/ablation.sh mnist one_vs_rest 50 m:cvae m:dcvae m:beta_vae m:beta_tcvae
    EXTRA="$SMALL_D" docs/results/ablation.sh mnist one_vs_rest 50 m:factor_vae m:rf_vae
    ROOT=$ROOT/fair EXTRA="$IW" \
      docs/results/ablation.sh mnist leave_one_out 10 m:dcvae+tc1 m:dcvae+tc2 m:beta_vae
    ROOT=$ROOT/fair EXTRA="$IW $SMALL_D" \
      docs/results/ablation.sh mnist leave_one_out 10 m:factor_vae m:rf_vae
    docs/results/ablation.sh fashion_mnist one_vs_rest 50 m:cvae m:dcvae m:beta_vae m:beta_tcvae
    EXTRA="$SMALL_D" docs/results/ablation.sh fashion_mnist one_vs_rest 50 m:factor_vae m:rf_vae
    ROOT=$ROOT/fair EXTRA="$IW" docs/results/ablation.sh fashion_mnist leave_one_out 10 m:beta_vae
    ROOT=$ROOT/fair EXTRA="$IW $SMALL_D" docs/results/ablation.sh fashion_mnist leave_one_out 10 m:factor_vae m:rf_vae
    ROOT=$ROOT/fair EXTRA="$IW" docs/results/ablation.sh mnist leave_one_out 50 m:beta_vae
    ROOT=$ROOT/fair EXTRA="$IW $SMALL_D" docs/results/ablation.sh mnist leave_one_out 50 m:factor_vae m:rf_vae
    ;;
  fair)  # docs/results/dcvae_fair.md beyond the rows of `run` and `table1`: seeds, full length, Fashion-MNIST
    export ROOT=$ROOT/fair EXTRA="$IW"
    docs/results/ablation.sh mnist leave_one_out 10 paper+s1 m:dcvae+s1 paper+s2 m:dcvae+s2
    docs/results/ablation.sh mnist leave_one_out 50 paper m:dcvae
    docs/results/ablation.sh fashion_mnist leave_one_out 10 paper m:dcvae m:cvae
    docs/results/ablation.sh mnist leave_one_out 10 m:cvae+s1 m:cvae+s2
    docs/results/ablation.sh fashion_mnist leave_one_out 10 m:dcvae+strat32
    docs/results/ablation.sh mnist leave_one_out 50 m:cvae
    docs/results/ablation.sh mnist leave_one_out 10 m:beta_tcvae+s1 m:beta_tcvae+s2 m:dcvae+strat32+s1 m:dcvae+strat32+s2
    docs/results/ablation.sh mnist leave_one_out 50 m:dcvae+strat32
    docs/results/ablation.sh fashion_mnist leave_one_out 10 m:beta_tcvae
    docs/results/ablation.sh mnist leave_one_out 50 m:beta_tcvae
    ;;
  tables)
    $T $ROOT mnist one_vs_rest 50 --rows=paper,cb,gpp,gpp+cos,paper+s1,paper+s2 --per_class=paper:sap_complexity --per_class=gpp:sap_complexity --seeds=paper --json=docs/results/detection_mnist_one_vs_rest.json
    $T $ROOT fashion_mnist one_vs_rest 50 --rows=paper,cb,gpp,gpp+s1,gpp+s2 --per_class=gpp:sap_complexity --seeds=gpp --json=docs/results/detection_fashion_mnist_one_vs_rest.json
    $T $ROOT mnist leave_one_out 10 --rows=paper,gpp --per_class=paper:rapp_sap --per_class=gpp:rapp_sap --json=docs/results/detection_mnist_leave_one_out.json
    $T $ROOT/fair mnist leave_one_out 10 --rows=paper,m:cvae,m:dcvae,m:dcvae+strat32,m:beta_tcvae,m:dcvae+tc1,m:dcvae+tc2 --per_class=paper:recon --per_class=m:cvae:recon --per_class=m:dcvae:recon --per_class=m:dcvae+strat32:recon --json=docs/results/dcvae_fair_mnist_leave_one_out.json
    ;;
  table1-tables)
    M=paper,m:cvae,m:beta_vae,m:factor_vae,m:rf_vae,m:beta_tcvae,m:dcvae
    $T $ROOT mnist one_vs_rest 50 --rows=$M --json=docs/results/table1_mnist_one_vs_rest.json
    $T $ROOT/fair mnist leave_one_out 10 --rows=$M,m:dcvae+strat32,m:dcvae+tc1,m:dcvae+tc2 \
      --per_class=m:dcvae:sap_complexity --json=docs/results/table1_mnist_leave_one_out.json
    $T $ROOT fashion_mnist one_vs_rest 50 --rows=$M --json=docs/results/table1_fashion_mnist_one_vs_rest.json
    $T $ROOT/fair mnist leave_one_out 50 --rows=$M --json=docs/results/table1_mnist_leave_one_out_50ep.json
    $T $ROOT/fair fashion_mnist leave_one_out 10 --rows=$M --json=docs/results/table1_fashion_mnist_leave_one_out.json
    ;;
  fair-tables)
    $T $ROOT/fair mnist leave_one_out 10 --rows=paper,paper+s1,paper+s2,m:cvae,m:cvae+s1,m:cvae+s2,m:dcvae,m:dcvae+s1,m:dcvae+s2,m:dcvae+strat32,m:dcvae+strat32+s1,m:dcvae+strat32+s2,m:beta_tcvae,m:beta_tcvae+s1,m:beta_tcvae+s2 \
      --seeds=paper --seeds=m:cvae --seeds=m:dcvae --seeds=m:dcvae+strat32 --seeds=m:beta_tcvae \
      --paired paper m:dcvae recon --paired paper m:dcvae sap_complexity \
      --paired m:cvae m:dcvae recon --paired m:cvae m:dcvae sap_complexity \
      --paired m:dcvae m:dcvae+strat32 recon --paired m:dcvae m:dcvae+strat32 sap_complexity \
      --paired m:beta_tcvae m:dcvae recon --paired m:beta_tcvae m:dcvae sap_complexity \
      --json=docs/results/dcvae_fair_mnist_leave_one_out_seeds.json
    $T $ROOT/fair mnist leave_one_out 50 --rows=paper,m:cvae,m:beta_tcvae,m:dcvae,m:dcvae+strat32 \
      --per_class=paper:recon --per_class=m:dcvae:recon \
      --paired paper m:dcvae recon --paired paper m:dcvae sap_complexity \
      --paired m:cvae m:dcvae recon --paired m:cvae m:dcvae sap_complexity \
      --paired m:dcvae m:dcvae+strat32 recon --paired m:dcvae m:dcvae+strat32 sap_complexity \
      --json=docs/results/dcvae_fair_mnist_leave_one_out_50ep.json
    $T $ROOT/fair fashion_mnist leave_one_out 10 --per_class=paper:recon --per_class=m:dcvae:recon \
      --json=docs/results/dcvae_fair_fashion_mnist_leave_one_out.json
    ;;
  *) echo "usage: $0 run|tables|table1|table1-tables|fair|fair-tables" >&2; exit 2 ;;
esac
