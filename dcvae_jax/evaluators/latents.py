"""Encoder means of the test set, and the disentanglement of each run's codes.

* :func:`encode_test_set` -- the encoder means mu(x[, c]) of every test image under every stacked model,
  (M, N, d): one jit(vmap over models) call per batch, the batch sharded over the mesh exactly as
  ``scoring.score_test_set`` does (``inference.map_batches``) (the last batch padded to the batch size and cut back).
* :func:`condition_ids` -- the condition of each test image for each run of a chunk: its class's position in
  ``run.normal``, or ``len(run.normal)`` for a class that is not a condition (``one_hot`` maps that id to the
  all-zero vector, as in ``scoring``).
* :func:`disentanglement_results` -- one run's metrics, a flat JSON-ready dict, on the run's **normal** test
  images only (the data it was trained on):
    - where the dataset knows its generative factors (procedural shapes): ``disentangle.compute_all`` as
      ``dis_mig``, ``dis_factor_vae``, ``dis_dci_disentanglement``, ``dis_dci_completeness``,
      ``dis_dci_informativeness``, ``dis_sap``, and the MIG of each factor, ``dis_mig_<name>``
      (None for a factor with one value on those images, e.g. the shape of a one-class run);
    - always: ``class_mig``, the MIG with the class label as the single factor. It needs >= 2 normal classes;
      with one, the class is constant on the run's data: ``class_mig`` is None and ``class_mig_note`` says
      why.
  Conditional models are encoded under each image's own condition, as they were trained, so their codes need
  not carry the class (the condition does): a low ``class_mig`` is then expected.
  Non-finite codes (a diverged model) give None metrics and a ``dis_error`` note, never an exception.
* :func:`summarize_disentanglement` -- mean / std over runs of every such metric, for results.json.
* :class:`Evaluator` -- the ``latents`` evaluator (evaluators/base.py): codes and their disentanglement.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dcvae_jax.data import protocols
from dcvae_jax.data.input_pipeline import preprocess
from dcvae_jax.evaluators import base
from dcvae_jax.evaluators.disentangle import metrics as disentangle
from dcvae_jax.models import inference, objectives

if TYPE_CHECKING:  # the training program's types, for annotations only
  from dcvae_jax.evaluators.scoring import ScoringSetup
  from dcvae_jax.train.train_step import ModelSetup

COMPUTE_ALL_KEYS = ("mig", "factor_vae", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap")


# ----------------------------------------------------------------------------------------------------------
# Codes.


def encode_batch(setup: ModelSetup | ScoringSetup, params, x, cond_ids):
  """Encoder means of one model on a float batch x (B,H,W,1) with int condition ids (B,): (B, d)."""
  c = objectives.one_hot_condition(setup.spec, cond_ids, setup.num_conditions)
  mu, _ = objectives.encode(setup.module, params, x, c)
  return mu


def compile_encode_fn(setup: ModelSetup | ScoringSetup, mesh):
  """jit(vmap over models) of encode_batch: params (M, ...), x uint8 (B,H,W), cond ids (M, B) -> (M, B, d).
  The batch axis is sharded over the mesh; the output is replicated."""
  fn = jax.vmap(functools.partial(encode_batch, setup), in_axes=(0, None, 0))

  def wrapped(params, x_uint8, cond_ids):
    return fn(
      params, preprocess(x_uint8, setup.binarize, setup.dequantize, image_shape=setup.module.image_shape), cond_ids
    )

  return jax.jit(
    wrapped,
    in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P("data")), NamedSharding(mesh, P(None, "data"))),
    out_shardings=NamedSharding(mesh, P()),
  )


def condition_ids(runs, y: np.ndarray) -> np.ndarray:
  """int32 (M, N): for run m, the position of y[i] in runs[m].normal, or len(runs[m].normal) (the all-zero
  condition) where y[i] is not a normal class of that run."""
  y = np.asarray(y)
  out = np.empty((len(runs), y.shape[0]), np.int32)
  for m, run in enumerate(runs):
    out[m] = protocols.condition_ids(run, y, missing=len(run.normal))
  return out


def _num_models(params) -> int:
  leaves = jax.tree.leaves(params)
  if not leaves:
    raise ValueError("params has no arrays")
  return int(leaves[0].shape[0])


def encode_test_set(setup: ModelSetup, params, x_test: np.ndarray, mesh, *, batch_size: int, conditions=None):
  """Encoder means of every test image under every stacked model: float32 numpy (M, N, d).

  params: a stacked params tree (leading model axis M), e.g. ``state.params`` of ``trainer.train_runs``.
  x_test: uint8 (N, H, W). conditions: int condition ids, (N,) for all models or (M, N) per model (see
  :func:`condition_ids`); id ``setup.num_conditions`` is the all-zero condition. Required for conditional
  models, ignored for unconditional ones. Each image is encoded exactly once: the batch size is rounded down
  to a multiple of the device count (at least one per device) and the last batch is padded and cut back.
  """
  x_test = np.asarray(x_test)
  n = x_test.shape[0]
  num_models = _num_models(params)
  if setup.spec.conditional:
    if conditions is None:
      raise ValueError(
        "a conditional model needs the condition of each image: pass conditions= (int ids, "
        f"(N,) or (M, N); id {setup.num_conditions} = the all-zero condition)"
      )
    ids = np.asarray(conditions)
    if ids.dtype.kind not in "iu":
      raise ValueError(f"conditions must be integer ids, got dtype {ids.dtype}")
    if ids.ndim == 1:
      ids = np.broadcast_to(ids, (num_models, ids.shape[0]))
    if ids.shape != (num_models, n):
      raise ValueError(f"conditions have shape {np.shape(conditions)}, expected ({n},) or ({num_models}, {n})")
    if ids.size and (ids.min() < 0 or ids.max() > setup.num_conditions):
      raise ValueError(
        f"condition ids span {ids.min()}..{ids.max()}, expected 0..{setup.num_conditions} "
        f"({setup.num_conditions} = the all-zero condition)"
      )
    ids = ids.astype(np.int32)
  else:
    ids = np.zeros((num_models, n), np.int32)
  if n == 0:
    return np.zeros((num_models, 0, int(setup.model_cfg.latent_dim)), np.float32)
  fn = compile_encode_fn(setup, mesh)
  mu = inference.map_batches(
    lambda i, xb, cb: fn(params, xb, cb), [(x_test, 0), (ids, 1)], mesh=mesh, batch_size=batch_size
  )
  return mu.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------------------
# Metrics.


def _none_if_nan(v):
  v = float(v)
  return v if np.isfinite(v) else None


def disentanglement_results(
  run, codes: np.ndarray, y_test: np.ndarray, factors_test=None, factor_names=None, seed: int = 0
) -> dict:
  """One run's disentanglement metrics on its normal test images (see the module docstring).

  codes: (N_test, d) this run's encoder means of the whole test set; y_test: (N_test,) labels;
  factors_test: int (N_test, K) ground-truth factors or None; factor_names: K names (default factor0..).
  """
  codes = np.asarray(codes, np.float64)
  y_test = np.asarray(y_test)
  if codes.ndim != 2 or codes.shape[0] != y_test.shape[0]:
    raise ValueError(f"codes {codes.shape} do not match y_test {y_test.shape}: expected (N_test, d)")
  keep = np.isin(y_test, run.normal)
  z, y = codes[keep], y_test[keep]
  n = int(keep.sum())
  out: dict[str, Any] = {"dis_num_images": n}
  error = None
  if n < 2:
    error = f"only {n} normal test image(s)"
  elif not np.all(np.isfinite(z)):
    error = f"non-finite codes for {int((~np.isfinite(z)).any(axis=1).sum())} of {n} normal test images"

  if factors_test is not None:
    factors = np.asarray(factors_test)
    if factors.ndim != 2 or factors.shape[0] != y_test.shape[0]:
      raise ValueError(f"factors_test {factors.shape} do not match y_test {y_test.shape}: expected (N_test, K)")
    names = list(factor_names) if factor_names is not None else [f"factor{k}" for k in range(factors.shape[1])]
    if len(names) != factors.shape[1]:
      raise ValueError(f"{len(names)} factor names for {factors.shape[1]} factor columns")
    f = factors[keep]
    if error is None:
      out.update({f"dis_{k}": float(v) for k, v in disentangle.compute_all(z, f, seed=seed).items()})
      gaps = disentangle.mig_per_factor(z, f)
      out.update({f"dis_mig_{name}": _none_if_nan(g) for name, g in zip(names, gaps, strict=True)})
    else:
      out.update({f"dis_{k}": None for k in COMPUTE_ALL_KEYS})
      out.update({f"dis_mig_{name}": None for name in names})

  if error is not None:
    out["dis_error"] = error
    out["class_mig"] = None
    out["class_mig_note"] = error
  elif len(run.normal) < 2:
    out["class_mig"] = None
    out["class_mig_note"] = "one normal class: the class is constant on the run's data, so its MIG is undefined"
  else:
    out["class_mig"] = float(disentangle.mig(z, y))
  return out


def _is_number(v) -> bool:
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def summarize_disentanglement(per_run: list[dict]) -> dict:
  """For results.json: ``<key>_mean`` / ``<key>_std`` over the runs that have a value, for every ``dis_*``
  metric and ``class_mig`` (None where no run has one); ``disentanglement_num_runs``: how many runs each mean is
  over (runs with None -- one normal class, non-finite codes -- or from an older workdir are left out); and
  ``class_mig_note`` when no run has a class MIG. Empty if no run has any of these metrics."""
  skip = ("dis_num_images", "dis_error")
  keys = sorted({k for r in per_run for k in r if (k.startswith("dis_") or k == "class_mig") and k not in skip})
  out: dict[str, Any] = {}
  counts: dict[str, int] = {}
  for key in keys:
    v = np.array([r[key] for r in per_run if _is_number(r.get(key))], np.float64)
    counts[key] = int(v.size)
    out[f"{key}_mean"], out[f"{key}_std"] = (float(v.mean()), float(v.std())) if v.size else (None, None)
  if counts:
    out["disentanglement_num_runs"] = counts
  if counts.get("class_mig") == 0:
    notes = [r["class_mig_note"] for r in per_run if r.get("class_mig_note")]
    if notes:
      out["class_mig_note"] = notes[0]
  return out


class Evaluator(base.Evaluator):
  """The ``latents`` evaluator: each run's encoder means of the test set (``codes`` (N_test, d) in
  scores/<run>.npz) and their disentanglement (:func:`disentanglement_results`); its summary
  :func:`summarize_disentanglement`. Nothing without test images."""

  def describe(self) -> str:
    return "codes" if self.job.data.x_test.shape[0] else ""

  def steps(self, runs) -> int:
    return 1 if self.job.data.x_test.shape[0] else 0  # one for all the group's codes

  def run(self, group: base.Group) -> base.Part:
    config, ds = self.job.config, self.job.data
    if ds.x_test.shape[0] == 0:
      return base.Part.empty(len(group.runs))
    group.progress.stage("codes")
    codes = encode_test_set(
      group.setup,
      group.state.params,
      ds.x_test,
      self.job.mesh,
      batch_size=config.eval.batch_size,
      conditions=condition_ids(group.runs, ds.y_test),
    )
    group.progress(1)
    group.progress.stage("disentanglement")
    results = [
      disentanglement_results(run, codes[m], ds.y_test, ds.factors_test, ds.factor_names, seed=config.seed)
      for m, run in enumerate(group.runs)
    ]
    return base.Part(results, [{"codes": codes[m]} for m in range(len(group.runs))])

  def summarize(self, per_run: list[dict], results: dict) -> dict:
    return summarize_disentanglement(per_run)
