"""The base experiment config. Every file in ``configs/`` starts from :func:`base_config` and overrides it.

Fields (all of them exist in every config, so ``--config.<key>=<value>`` works for any of them):
  seed                         root of every random number (per run: fold_in(seed, run id); per step: fold_in(., step))
  model.name                   a key of ``dcvae_jax.models.registry.MODELS``
  model.arch                   "mlp" | "conv";  model.hidden: widths (conv: channels..., dense)
  model.latent_dim             d
  model.likelihood             "bernoulli" (cross-entropy; a density only on binary pixels) | "continuous_bernoulli"
                               | "gaussian" (model.gaussian_variance: "fixed" (model.gaussian_std, default 1),
                               "global" or "per_pixel" (learned))
  model.<name>.*               the weights that only model <name> reads, in a section of its own (the model
                               registry's ModelSpec.section; vae and cvae have none). One section per model, not
                               one per regulariser family, so each model reads exactly one section and
                               --mode=table can give beta_tcvae and dcvae (or factor_vae and rf_vae) different
                               weights. The math of each weight: docs/design.md "Objectives".
    beta_vae.beta              the KL weight
    beta_tcvae.alpha, tc_beta, gamma / dcvae.alpha, tc_beta, gamma
                               weights of MI, TC and dimension-wise KL (dcvae: conditioned on c)
    factor_vae.gamma, disc_layers, disc_width
                               weight of the discriminator's TC estimate; the discriminator's depth and width
    rf_vae.gamma, disc_layers, disc_width, lambda_min, lambda_max, eta_s, eta_h
                               as factor_vae, plus the relevance-weighted KL and the penalties on r
                               A flat name such as model.tc_beta is refused with the name of its sections
                               (MOVED_FIELDS), and read as them from a workdir's trained.json or config.json
  model.estimator              "mss" | "mws": the minibatch estimator of q(z) (docs/design.md "Estimators"); every
                               model logs the KL decomposition it estimates, so it is not in a model's section
  model.tc_scope               "global": TC estimators see the whole global batch (codes all-gathered);
                               "local": each device's shard is its own minibatch (as a per-device estimator would)
  data.name / data_dir         dataset name; a local folder of .npz or IDX files (overrides TFDS); data.name="folder":
                               your own images in data_dir (train/ [+ test/normal/, test/anomalous/], or train.npz
                               [+ test.npz]; see dcvae_jax/data/folder_source.py), protocol "folder"
  data.image_size              folder: every image resized to (H, W) (an int n: n x n); () = the images' own size
                               (they must all agree)
  data.channels                folder: 1 (grey) or 3 (colour); 0 = the images' own (they must all agree)
  data.binarize                threshold pixels at 0.5 (the paper does)
  data.dequantize              grey levels k -> (k + u)/256, u ~ U(0,1) in training (1/2 in evaluation): a density on
                               [0, 1] then is a density of the 8-bit image (needs binarize=False)
  data.validation_fraction     in [0, 1): this fraction of every class of the training split (floor(f n_c + 1/2)
                               images, drawn with the seed) is held out as validation; no run trains on it, every
                               run scores it as its test set (val_auroc_by_score), protocol.score="auto" and the
                               decision threshold are chosen on it; 0 = no validation split (data/splits.py)
  protocol.name                "one_vs_rest" | "leave_one_out" | "split" | "ood" | "folder" (data.name="folder" always uses it)
  protocol.classes             which normal (one_vs_rest) / held-out (leave_one_out) classes to run; () = all
  protocol.normal, anomalous   class lists for "split"
  protocol.ood_dataset         "ood": normal = every class of data.name, anomalies = the test split of this dataset
                               (same image shape; validation anomalies: the validation fraction of its TRAINING split)
  protocol.ood_data_dir        "ood": a local folder of its .npz or IDX files (as data.data_dir; "" = embedded / TFDS)
  protocol.score               "recon" | "nelbo" | "iwae" | "complexity" | "rapp" | "rapp_sap" | "sap_complexity" |
                               "latent_knn" | "sap_knn" | "sap_complexity_knn" (the headline score, among eval.scores;
                               see evaluators/scoring.py) | "auto" (the score with the highest mean validation AUROC
                               over the protocol's runs, among eval.scores)
  eval.scores                  which scores are computed and reported (default: the first seven; () = all ten; a
                               score left out is absent from results.json, and its cost is not paid: iwae,
                               complexity and sap_complexity need the K-sample iwae bound, rapp NAP's fit, the
                               *knn scores the codes of every normal training image; not with score_condition given)
  eval.evaluators              what evaluates each group of runs once trained, each writing its own part of the results
                               (evaluators/registry.py): "detection" (scores, metrics, thresholds), "latents" (codes,
                               disentanglement), "tensorboard" (metrics and reconstructions, with train.tensorboard)
  train.lr_schedule            "constant" | "warmup_cosine" (train.warmup_fraction, train.final_lr_fraction)
  eval.iwae_samples            K of the importance-weighted bound (its noise drawn eval.iwae_chunk samples per key)
  eval.rapp_fit_examples       normal training images that fit RaPP's NAP normalisation
  eval.reference_examples      normal training images that standardise the sums (sap_complexity, sap_knn, ...)
  eval.knn_neighbours          k of latent_knn: the mean distance to the k nearest normal training codes (default
                               1, the nearest; stage 12 of docs/results/validation.md)
  eval.complexity_compressor   the lossless code L(x) of the complexity score: "png" (default) | "jpeg2000" (stage 14)
  eval.threshold_fpr           in (0, 1): each run's decision threshold of the headline score is the order statistic
                               of its normal validation images' scores that flags at most this fraction of them
                               (evaluators/threshold.py); thresholds.json, and test precision / recall / F1 / FPR
  eval.contamination           in [0, 1): > 0 overrides threshold_fpr: the threshold flags this fraction of all the
                               run's validation images (normal and anomalous), as PyOD's contamination
  protocol.score_condition     "min" | "marginal" | "given" (conditional models only; "given" leaks the label)
  train.*                      optimisation, logging, checkpoints (see below)
  train.batch_sampling         "uniform": each epoch a uniform permutation cut into batches (the default) |
                               "stratified": each batch holds train.per_condition examples of each of
                               train.conditions_per_batch distinct conditions, as consecutive groups, so the
                               conditional estimators (dcvae) see groups of exactly per_condition;
                               batch_size must equal conditions_per_batch x per_condition (0 = derive one of
                               the two from the other); with model.tc_scope="local" conditions_per_batch must
                               be a multiple of the device count (every device's shard holds whole groups).
                               An epoch cuts every class into chunks of per_condition, so it sees every example
                               once up to each class's remainder (see input_pipeline.RunData)

``FIELD_HELP`` gives every field one line of meaning (``--mode=config`` prints it beside each value; a field
without one fails the tests). ``config_file(name)`` finds a config by name (``mnist``, ``default:smoke``) in the
checkout's ``configs/`` or, in an installed package, in ``dcvae_jax/_configs`` (the same files, shipped).
"""

from __future__ import annotations

import importlib.util
import json
import os

import ml_collections

from dcvae_jax import options


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 1  # seeds seed, seed+1, ... are run for every protocol class

  c.model = ml_collections.ConfigDict()
  c.model.name = "vae"
  c.model.arch = "mlp"
  c.model.hidden = (512, 256)
  c.model.latent_dim = 10
  c.model.likelihood = "bernoulli"
  c.model.gaussian_variance = "fixed"  # gaussian: "fixed" | "global" | "per_pixel"
  c.model.gaussian_std = 1.0  # gaussian, fixed variance: sigma
  c.model.compute_dtype = "float32"  # "bfloat16": mixed precision (bf16 compute, fp32 params, optimizer, losses)
  c.model.estimator = "mss"
  c.model.tc_scope = "global"
  # One section per model that has weights of its own (registry.ModelSpec.section): a model reads only its own.
  c.model.beta_vae = ml_collections.ConfigDict(dict(beta=4.0))
  decomposed = dict(alpha=1.0, tc_beta=6.0, gamma=1.0)  # weights of MI, TC and dimension-wise KL
  c.model.beta_tcvae = ml_collections.ConfigDict(decomposed)
  c.model.dcvae = ml_collections.ConfigDict(decomposed)
  discriminator = dict(gamma=6.4, disc_layers=6, disc_width=1000)  # TC_D weight; the discriminator's shape
  c.model.factor_vae = ml_collections.ConfigDict(discriminator)
  c.model.rf_vae = ml_collections.ConfigDict(dict(discriminator, lambda_min=0.1, lambda_max=10.0, eta_s=6.4, eta_h=6.4))

  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist5k"
  c.data.data_dir = ""
  c.data.tfds_data_dir = ""
  c.data.download = True
  c.data.binarize = True
  c.data.dequantize = False
  c.data.image_size = ()  # folder: (H, W) or an int to resize every image to; () = the images' own (auto)
  c.data.channels = 0  # folder: 1 (grey) or 3 (colour) to convert every image to; 0 = the images' own (auto)
  c.data.validation_fraction = 0.1  # of every class of the training split, held out (no run trains on it); 0 = none

  c.protocol = ml_collections.ConfigDict()
  c.protocol.name = "leave_one_out"
  c.protocol.classes = ()
  c.protocol.normal = ()
  c.protocol.anomalous = ()
  c.protocol.score = "recon"
  c.protocol.score_condition = "min"
  c.protocol.ood_dataset = ""  # protocol "ood": the dataset whose test images are the anomalies
  c.protocol.ood_data_dir = ""  # protocol "ood": a local folder of ood_dataset's files ("" = embedded / TFDS)

  c.train = ml_collections.ConfigDict()
  c.train.num_epochs = 20
  c.train.batch_size = 64
  c.train.learning_rate = 1e-3  # "primary" rate: the VAE
  c.train.lr_schedule = "constant"  # or "warmup_cosine"
  c.train.warmup_fraction = 0.05  # warmup_cosine: linear warm-up over this fraction of the steps
  c.train.final_lr_fraction = 0.01  # warmup_cosine: final rate = this x learning_rate
  c.train.disc_learning_rate = 1e-4  # "secondary" rate: the FactorVAE/RF-VAE discriminator
  c.train.batch_sampling = "uniform"  # or "stratified" (see the docstring)
  c.train.per_condition = 16  # stratified: examples of each condition in a batch
  c.train.conditions_per_batch = 0  # stratified: distinct conditions in a batch; 0 = batch_size // per_condition
  c.train.steps_per_call = 50  # training steps fused into one compiled call (lax.scan)
  c.train.runs_per_program = 0  # runs trained together in one compiled program; 0 = all of the protocol
  c.train.ensemble = "auto"  # how they share it: "vmap" (batched), "map" (one after another inside
  # the program) or "auto" (map on CPU, vmap on GPU/TPU)
  c.train.log_every_steps = 10
  c.train.checkpoint_every_steps = 1000
  c.train.keep_checkpoints = 2
  c.train.on_nonfinite = "stop"  # "stop" | "skip" (skip the update and count it)
  c.train.progress = True
  c.train.tensorboard = True  # also write the metrics as TensorBoard event files (<workdir>/tensorboard)

  c.table = ml_collections.ConfigDict()
  c.table.models = ()  # --mode=table: models to compare; () = the paper's six
  c.table.figures = True  # draw each model's figures and report.html after it trains
  c.table.figure_runs = 1  # how many runs per model get per-run figures

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 1000
  c.eval.elbo_samples = 4
  c.eval.scores = options.DEFAULT_SCORES  # computed scores (the latent_knn family is opt-in)
  c.eval.iwae_samples = 64  # K of the iwae score
  c.eval.iwae_chunk = 16  # iwae noise drawn in chunks of this many samples, one key each (fixes its values)
  c.eval.rapp_fit_examples = 2000  # normal training images that fit NAP's mean and SVD (per run)
  c.eval.reference_examples = 200  # normal training images that standardise sap_complexity (per run)
  c.eval.knn_neighbours = 1  # latent_knn: mean distance to this many nearest normal training codes
  c.eval.complexity_compressor = "png"  # complexity's L(x): "png" | "jpeg2000" (lossless, anomaly_scores.length_bits)
  c.eval.threshold_fpr = 0.05  # decision threshold: target false-positive rate on normal validation images
  c.eval.contamination = 0.0  # > 0: threshold flags this fraction of all validation images instead (PyOD-style)
  c.eval.evaluators = ("detection", "latents", "tensorboard")  # what runs after training (evaluators/registry.py)
  return c


FIELD_HELP = {
  "seed": "root of every random number (per run: fold_in(seed, run id); per step: fold_in(., step))",
  "num_seeds": "seeds seed, seed+1, ... run for every protocol class",
  "model.name": "vae | cvae | beta_vae | factor_vae | rf_vae | beta_tcvae | dcvae (models/registry.py)",
  "model.arch": "encoder/decoder: mlp | conv",
  "model.hidden": "layer widths (conv: channels..., then the dense width)",
  "model.latent_dim": "d, the size of the latent code z",
  "model.likelihood": "p(x|z): bernoulli | continuous_bernoulli | gaussian",
  "model.gaussian_variance": "gaussian likelihood: fixed (model.gaussian_std) | global | per_pixel (learned)",
  "model.gaussian_std": "gaussian likelihood with fixed variance: sigma",
  "model.compute_dtype": "float32 | bfloat16 (mixed precision: bf16 compute, fp32 params, optimizer, losses)",
  "model.estimator": "minibatch estimator of q(z): mss (stratified) | mws (weighted)",
  "model.tc_scope": "global: TC estimators see the whole batch | local: each device's shard alone",
  "model.beta_vae.beta": "beta_vae: weight of KL(q(z|x) || p(z))",
  "model.beta_tcvae.alpha": "beta_tcvae: weight of the index-code MI I(x;z)",
  "model.beta_tcvae.tc_beta": "beta_tcvae: weight of the total correlation TC(z)",
  "model.beta_tcvae.gamma": "beta_tcvae: weight of the dimension-wise KL",
  "model.dcvae.alpha": "dcvae: weight of the conditional index-code MI I(x;z|c)",
  "model.dcvae.tc_beta": "dcvae: weight of the conditional total correlation TC(z|c)",
  "model.dcvae.gamma": "dcvae: weight of the dimension-wise KL to the learned prior r(z|c)",
  "model.factor_vae.gamma": "factor_vae: weight of the discriminator's TC estimate",
  "model.factor_vae.disc_layers": "factor_vae: hidden layers of the TC discriminator",
  "model.factor_vae.disc_width": "factor_vae: width of each discriminator layer",
  "model.rf_vae.gamma": "rf_vae: weight of the discriminator's TC estimate of r * z",
  "model.rf_vae.disc_layers": "rf_vae: hidden layers of the TC discriminator",
  "model.rf_vae.disc_width": "rf_vae: width of each discriminator layer",
  "model.rf_vae.lambda_min": "rf_vae: KL weight of a fully relevant dimension (r = 1)",
  "model.rf_vae.lambda_max": "rf_vae: KL weight of an irrelevant dimension (r = 0)",
  "model.rf_vae.eta_s": "rf_vae: weight of the L1 sparsity penalty on the relevance r",
  "model.rf_vae.eta_h": "rf_vae: weight of the binary entropy penalty on the relevance r",
  "data.name": "mnist5k (embedded) | mnist | fashion_mnist | kmnist | emnist/byclass|digits|letters | shapes | folder",
  "data.data_dir": "a local folder of <name>_train/_test.npz or IDX files (then no TFDS); '' = none",
  "data.tfds_data_dir": "where TFDS keeps its datasets; '' = ~/tensorflow_datasets",
  "data.download": "let TFDS download a dataset that is not prepared",
  "data.image_size": "folder: resize every image to (H, W) or n x n; () = the images' own size (auto)",
  "data.channels": "folder: convert every image to 1 (grey) or 3 (colour) channels; 0 = the images' own (auto)",
  "data.validation_fraction": "share of every class of the training split held out as validation (never trained on)",
  "data.binarize": "threshold pixels at 0.5 (the paper does)",
  "data.dequantize": "grey level k -> (k + u)/256 (u ~ U(0,1) in training, 1/2 in evaluation); needs binarize=False",
  "protocol.ood_dataset": "ood: the dataset whose test images are the anomalies (same image shape)",
  "protocol.ood_data_dir": "ood: a local folder of that dataset's files ('' = TFDS)",
  "protocol.name": "one_vs_rest | leave_one_out | split",
  "protocol.classes": "which normal (one_vs_rest) / held-out (leave_one_out) classes to run; () = all",
  "protocol.normal": "split: the normal classes",
  "protocol.anomalous": "split: the anomalous classes",
  "protocol.score": "headline score (one of eval.scores, or auto: chosen on validation)",
  "protocol.score_condition": "conditional models: min | marginal | given (given leaks the test label)",
  "train.num_epochs": "passes over the normal training images",
  "train.batch_size": "global batch (split over the devices)",
  "train.learning_rate": "Adam rate of the VAE (the paper's primary rate)",
  "train.lr_schedule": "constant | warmup_cosine",
  "train.warmup_fraction": "warmup_cosine: linear warm-up over this fraction of the steps",
  "train.final_lr_fraction": "warmup_cosine: final rate = this x learning_rate",
  "train.disc_learning_rate": "Adam rate of the factor_vae / rf_vae discriminator (the secondary rate)",
  "train.batch_sampling": "uniform (shuffled epochs) | stratified (per_condition examples of each condition)",
  "train.per_condition": "stratified: examples of each condition in a batch",
  "train.conditions_per_batch": "stratified: distinct conditions in a batch; 0 = batch_size // per_condition",
  "train.steps_per_call": "training steps fused into one compiled call (lax.scan)",
  "train.runs_per_program": "runs trained together in one compiled program; 0 = all of the protocol",
  "train.ensemble": "how runs share a program: vmap | map | auto (map on CPU, vmap on GPU/TPU)",
  "train.log_every_steps": "steps between lines of metrics.jsonl and TensorBoard points",
  "train.checkpoint_every_steps": "steps between checkpoints (also saved at the end and on SIGTERM / Ctrl-C)",
  "train.keep_checkpoints": "checkpoints kept per group of runs",
  "train.on_nonfinite": "stop (at the first NaN/Inf) | skip (skip such updates and count them)",
  "train.progress": "show a progress bar",
  "train.tensorboard": "write TensorBoard event files under <workdir>/tensorboard",
  "table.models": "--mode=table: models to compare; () = the paper's six",
  "table.figures": "--mode=table: draw each model's figures and report.html",
  "table.figure_runs": "--mode=table: runs per model that get per-run figures",
  "eval.scores": "which scores to compute and report; () = all ten (a score left out is absent, not zero)",
  "eval.evaluators": "what runs after training: detection | latents | tensorboard (its part of results); () = none",
  "eval.threshold_fpr": "decision threshold: this false-positive rate on held-out normal validation images",
  "eval.contamination": "if > 0: threshold at this expected share of anomalies in the validation images instead",
  "eval.batch_size": "test images per scoring batch",
  "eval.elbo_samples": "samples of z for the nelbo score",
  "eval.iwae_samples": "K of the iwae score's importance-weighted bound",
  "eval.iwae_chunk": "iwae noise: samples drawn per key (which numbers are drawn; decoder passes are sized by scoring)",
  "eval.rapp_fit_examples": "normal training images that fit RaPP's NAP normalisation (per run)",
  "eval.reference_examples": "normal training images that standardise the summed scores (per run)",
  "eval.knn_neighbours": "latent_knn (and its sums): mean distance to this many nearest normal training codes",
  "eval.complexity_compressor": "the lossless compressor whose code length L(x) the complexity score subtracts",
}
"""One line of meaning for every field of :func:`base_config` (dotted key -> text)."""


def leaves(config, prefix: str = "") -> list:
  """[(dotted key, value)] of every leaf field of a config, sorted by key."""
  out = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out += leaves(value, f"{prefix}{key}.")
    else:
      out.append((prefix + key, value))
  return sorted(out)


# Flat model.* names -> the fields of the model sections that hold them (a flat weight is read by every model of
# its family, so it maps to each of their sections).
MOVED_FIELDS = {
  "model.beta": ("model.beta_vae.beta",),
  **{
    f"model.{k}": (f"model.beta_tcvae.{k}", f"model.dcvae.{k}")
    for k in ("alpha", "tc_beta", "gamma")  # the weights of the decomposed KL
  },
  "model.factor_gamma": ("model.factor_vae.gamma", "model.rf_vae.gamma"),
  **{f"model.{k}": (f"model.factor_vae.{k}", f"model.rf_vae.{k}") for k in ("disc_layers", "disc_width")},
  **{f"model.{k}": (f"model.rf_vae.{k}",) for k in ("lambda_min", "lambda_max", "eta_s", "eta_h")},
}
"""Old flat name -> its new names, for the error that names them and for reading workdirs of the old layout."""

OLD_NAME = {new: old for old, news in MOVED_FIELDS.items() for new in news}
"""New dotted name -> the flat name it had (``workdir`` reads trained.json records of the old layout)."""


def moved_message(key: str) -> str | None:
  """One line saying where a flat model field of earlier versions went (None if ``key`` did not move)."""
  key = key.removeprefix("config.")
  if key not in MOVED_FIELDS:
    return None
  return (
    f"config key '{key}' has moved to each model's own section: "
    + " or ".join(f"'{k}'" for k in MOVED_FIELDS[key])
    + " (e.g. --config."
    + MOVED_FIELDS[key][-1]
    + "=...)"
  )


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """A config saved as JSON (a workdir's config.json) as a full config: :func:`base_config` with the saved
  values. A field the saved config lacks (written before the field existed) keeps its default, which keeps the
  old behaviour; a flat model field of the old layout (MOVED_FIELDS) fills its new sections; a field that no
  longer exists is dropped. JSON lists become tuples where the field is a tuple."""
  config = base_config()
  flat = {}

  def walk(node: dict, prefix: str) -> None:
    for key, value in node.items():
      if isinstance(value, dict) and f"{prefix}{key}" not in MOVED_FIELDS:
        walk(value, f"{prefix}{key}.")
      else:
        flat[prefix + key] = value

  walk(saved, "")
  for key in [k for k in flat if k in MOVED_FIELDS]:
    value = flat.pop(key)
    for new in MOVED_FIELDS[key]:
      flat.setdefault(new, value)
  for key, value in flat.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part] if isinstance(node, ml_collections.ConfigDict) and part in node else None
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      continue  # a field of an earlier version that no longer exists
    node[leaf] = tuple(value) if isinstance(node[leaf], tuple) and isinstance(value, list) else value
  return config


def load_saved(path: str) -> ml_collections.ConfigDict:
  """:func:`from_saved` of the JSON file ``path``."""
  with open(path) as f:
    return from_saved(json.load(f))


def describe(config) -> str:
  """The config, one ``key = value  # meaning`` line per field (``--mode=config``)."""
  rows = [(key, repr(tuple(v) if isinstance(v, list) else v)) for key, v in leaves(config)]
  width = max(len(k) + len(v) for k, v in rows) + 3
  return "\n".join(
    f"{k} = {v}".ljust(width) + f"  # {FIELD_HELP.get(k, '(not a field of base_config)')}" for k, v in rows
  )


def _checkout_configs() -> str:
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def configs_dir() -> str | None:
  """The folder of the named configs: ``dcvae_jax/_configs`` of an installed package (pyproject.toml maps the
  checkout's ``configs/`` there), else the checkout's ``configs/`` beside the package; None if neither."""
  try:
    spec = importlib.util.find_spec("dcvae_jax._configs")
  except (ImportError, ValueError):
    spec = None
  for folder in [*(spec.submodule_search_locations or [] if spec else []), _checkout_configs()]:
    if os.path.isfile(os.path.join(folder, "default.py")):
      return folder
  return None


def config_names() -> list:
  """The names ``--config`` takes without a path (the files of :func:`configs_dir`)."""
  folder = configs_dir()
  if folder is None:
    return []
  return sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_"))


def config_file(arg: str) -> str:
  """``--config``'s value -> a config file path (with its ``:argument``). A path that exists is kept; a bare name
  (``mnist``, ``mnist.py``, ``configs/mnist.py`` from another folder) is the file of that name in
  :func:`configs_dir`. Raises ValueError naming the known configs if neither."""
  path, colon, arg_ = arg.partition(":")
  if os.path.exists(path):
    return arg
  head, base = os.path.split(path)
  name = base[:-3] if base.endswith(".py") else base
  folder = configs_dir()
  if folder is not None and head.rstrip("/") in ("", "configs") and name in config_names():
    return os.path.join(folder, name + ".py") + colon + arg_
  raise ValueError(f"no config file {path!r}: give a path, or one of the names {', '.join(config_names())}")


# The detection setting the validation study (docs/results/validation.md) chose for Fashion-MNIST one-vs-rest,
# applied by ``configs/<dataset>.py:best`` (MNIST's changes: configs/mnist.py).
BEST_DETECTOR = dict(
  model="vae",
  arch="mlp",
  hidden=(512, 256),  # stage 11's choice; stage 10's wider MLP (1024-512) lost to 100 epochs of this one
  latent_dim=10,
  binarize=False,
  dequantize=True,
  likelihood="gaussian",
  gaussian_variance="per_pixel",
  score="sap_complexity_knn",  # Fashion-MNIST one-vs-rest's validation choice (stages 8-12 of the study)
  knn_neighbours=5,  # stage 12: latent_knn's mean over the 5 nearest codes (a 0.00001 margin over 1; see there)
  complexity_compressor="jpeg2000",  # stage 14: complexity's L(x) from lossless JPEG 2000, not PNG
  scores=(),  # eval.scores: () = all ten, so protocol.score=auto chooses among every score the study compared
  num_epochs=50,  # stage 16: 50 epochs beat stage 11's 100 under stages 12-15's scoring (validation, 3 seeds)
  lr_schedule="constant",
  iwae_samples=64,  # stage 15: the iwae bound with K = 64 (16 before), with 1000 reference images below
  reference_examples=1000,  # stage 15: the sums standardised on 1000 normal training images (200 before)
)


def best_detector(config: ml_collections.ConfigDict, **changes) -> ml_collections.ConfigDict:
  """Apply BEST_DETECTOR (with per-dataset ``changes``): model, architecture, latent size, likelihood, headline
  score, latent_knn's neighbours, complexity's compressor and the scores computed, epochs, schedule, IWAE samples and
  reference images. The protocol stays the config's (choose it with --config.protocol.name). Each dataset's choice
  was made on validation AUROC only (docs/results/validation.md)."""
  best = {**BEST_DETECTOR, **changes}
  config.model.name = best["model"]
  config.model.arch = best["arch"]
  config.model.hidden = tuple(best["hidden"])
  config.model.latent_dim = best["latent_dim"]
  config.model.likelihood = best["likelihood"]
  config.model.gaussian_variance = best["gaussian_variance"]
  config.data.binarize = best["binarize"]
  config.data.dequantize = best["dequantize"]
  config.protocol.score = best["score"]
  config.eval.knn_neighbours = best["knn_neighbours"]
  config.eval.complexity_compressor = best["complexity_compressor"]
  config.eval.scores = tuple(best["scores"])
  config.train.num_epochs = best["num_epochs"]
  config.train.lr_schedule = best["lr_schedule"]
  config.eval.iwae_samples = best["iwae_samples"]
  config.eval.reference_examples = best["reference_examples"]
  return config


def dataset_config(
  arg: str,
  *,
  dataset: str,
  model: str = "dcvae",
  protocol: str = "leave_one_out",
  num_epochs: int = 20,
  batch_size: int = 64,
  best: dict | None = None,
) -> ml_collections.ConfigDict:
  """A dataset config file's ``get_config(arg)``: the base config for ``dataset``; ``arg="smoke"`` shrinks it to
  seconds, ``arg="best"`` applies the best detection setting found for it (``best``: its changes to
  BEST_DETECTOR)."""
  config = base_config()
  config.data.name = dataset
  config.model.name = model
  config.protocol.name = protocol
  config.train.num_epochs = num_epochs
  config.train.batch_size = batch_size
  config.train.checkpoint_every_steps = 2000
  if arg == "smoke":  # seconds: one epoch of a small network on one protocol class
    config.train.num_epochs = 1
    config.model.hidden = (64, 32)
    config.protocol.classes = (0,)
    config.train.steps_per_call = 10
    config.train.progress = False
  elif arg == "best":
    best_detector(config, **(best or {}))
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (expected '', 'smoke' or 'best')")
  return config


def folder_config(arg: str = "") -> ml_collections.ConfigDict:
  """Your own images (data.name=folder, its protocol), with the best detection setting: ``configs/folder.py``'s
  config and ``dcvae_jax.Detector``'s default; ``arg="smoke"``: seconds on a small folder (one epoch, a small
  network)."""
  if arg not in ("", "smoke"):
    raise ValueError(f"unknown config argument {arg!r} (expected '' or 'smoke')")
  config = best_detector(dataset_config(arg, dataset="folder", model="vae", protocol="folder"))
  config.train.checkpoint_every_steps = 1000
  if arg == "smoke":  # seconds on a small folder: one epoch of a small network
    config.train.num_epochs = 1
    config.model.hidden = (64, 32)
    config.train.batch_size = 16
    config.eval.iwae_samples = 16
    config.eval.rapp_fit_examples = 200
  return config


def paper_settings(
  config: ml_collections.ConfigDict, arg: str, *, batch_size: int, learning_rate: float, disc_learning_rate: float
) -> ml_collections.ConfigDict:
  """The paper's stated optimisation: 50 epochs, its batch size and "primary / secondary learning rates"."""
  config.train.batch_size = batch_size
  config.train.learning_rate = learning_rate
  config.train.disc_learning_rate = disc_learning_rate
  if arg != "smoke":
    config.train.num_epochs = 50
  return config
