"""The allowed values of every config field with a fixed set of choices, in one place that imports nothing
heavy: ``validation.validate`` reads them here, and the modules that act on a choice import their tuple from
here (a test checks that each tuple matches what its module implements)."""

import numbers

MODEL_NAMES = ("vae", "cvae", "beta_vae", "beta_tcvae", "dcvae", "factor_vae", "rf_vae")  # model.name
ARCHS = ("mlp", "conv")  # model.arch
LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")  # model.likelihood
GAUSSIAN_VARIANCES = ("fixed", "global", "per_pixel")  # model.gaussian_variance
COMPUTE_DTYPES = ("float32", "bfloat16")  # model.compute_dtype
ESTIMATORS = ("mss", "mws")  # model.estimator: minibatch stratified / weighted sampling (Chen et al. 2018)
TC_SCOPES = ("global", "local")  # model.tc_scope

PROTOCOLS = ("one_vs_rest", "leave_one_out", "split", "folder", "ood")  # protocol.name
SCORES = (  # protocol.score; the last three are not in the default eval.scores (evaluators/latent_knn.py)
  "recon",
  "nelbo",
  "iwae",
  "complexity",
  "rapp",
  "rapp_sap",
  "sap_complexity",
  "latent_knn",
  "sap_knn",
  "sap_complexity_knn",
)
COMPLEXITY_COMPRESSORS = ("png", "jpeg2000")  # eval.complexity_compressor (anomaly_scores.length_bits)
DEFAULT_SCORES = SCORES[:7]  # eval.scores by default: the latent_knn family is opt-in
SCORE_CONDITIONS = ("min", "marginal", "given")  # protocol.score_condition
EVALUATORS = ("detection", "latents", "tensorboard")  # eval.evaluators, in the order they run
EVALUATOR_NEEDS = {"tensorboard": ("detection",)}  # evaluators that read another's results

CHANNELS = (0, 1, 3)  # data.channels: 0 = auto (taken from the images), 1 = grey, 3 = colour

BATCH_SAMPLING = ("uniform", "stratified")  # train.batch_sampling
ENSEMBLE_MODES = ("auto", "vmap", "map")  # train.ensemble
LR_SCHEDULES = ("constant", "warmup_cosine")  # train.lr_schedule
ON_NONFINITE = ("stop", "skip")  # train.on_nonfinite


def sampling_options(config) -> dict:
  """train.batch_sampling, train.per_condition, train.conditions_per_batch -> RunData.build keyword arguments.

  "uniform": every epoch is a uniform permutation of the run's examples cut into batches.
  "stratified": every batch holds ``per_condition`` examples of each of ``conditions_per_batch`` distinct
  conditions (batch_size = conditions_per_batch x per_condition; either may be 0 = derived from the other), so
  every group of a conditional estimator has exactly per_condition members. With model.tc_scope="local" the
  batch is split into num_devices consecutive shards, each of which must hold whole groups
  (conditions_per_batch divisible by the number of devices).
  ``validation.validate`` checks these conditions."""
  t = config.train
  if t.batch_sampling == "uniform":
    return dict(sampling="uniform")
  batch, p, k = int(t.batch_size), int(t.per_condition), int(t.conditions_per_batch)
  p, k = p or batch // k, k or batch // max(p, 1)
  return dict(sampling="stratified", per_condition=p, conditions_per_batch=k)


def image_size_arg(value) -> tuple:
  """data.image_size: ``()`` (auto), or ``(H, W)`` from an int n (n x n) or a pair; ValueError for anything else."""
  if value is None or (isinstance(value, (tuple, list)) and len(value) == 0):
    return ()
  if isinstance(value, (tuple, list)) and len(value) == 1:
    value = value[0]
  sizes = (
    (value, value)
    if isinstance(value, numbers.Integral)
    else tuple(value)
    if isinstance(value, (tuple, list))
    else None
  )
  if (
    sizes is None
    or len(sizes) != 2
    or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes)
    or min(sizes) < 1
  ):
    raise ValueError(f"an image size is () (auto), a positive int or (height, width), got {value!r}")
  return (int(sizes[0]), int(sizes[1]))
