"""FactorVAE disentanglement score (Kim & Mnih 2018) on a finite dataset of (code, factor) pairs.

Re-exported by :mod:`dcvae_jax.evaluators.disentangle.metrics` (see its docstring for the conventions shared by all
metrics). The vote sampling is in :func:`factor_vae_score`; the majority-vote classifier on the
resulting vote counts is the pure pair :func:`majority_vote_classifier` /
:func:`majority_vote_accuracy`.
"""

from __future__ import annotations

import numpy as np

from dcvae_jax.evaluators.disentangle.inputs import check_inputs

__all__ = ["factor_vae_score", "majority_vote_classifier", "majority_vote_accuracy"]


def factor_vae_score(
  codes,
  factors,
  *,
  num_train: int = 10000,
  num_eval: int = 5000,
  batch_size: int = 64,
  prune_threshold: float = 0.05,
  seed: int = 0,
  return_details: bool = False,
):
  """FactorVAE disentanglement metric (Kim & Mnih 2018), on a finite dataset.

  Each "vote" is produced as in disentanglement_lib, but the ground-truth simulator is
  replaced by resampling rows of the given dataset:

  1. choose a factor ``k`` uniformly among the *eligible* factors (at least two distinct
     values, at least one value shared by >= 2 rows);
  2. choose a value ``v = factors[r, k]`` for a uniformly random row ``r`` among rows whose
     value group has >= 2 rows (so ``v`` follows the empirical marginal of factor k);
  3. draw ``batch_size`` rows uniformly **with replacement** from ``{i: factors[i, k] == v}``
     (all other factors vary as they do in the data);
  4. compute the per-dim variance (ddof=1) of their codes divided by the global variance
     (ddof=1, over all N codes, i.e. codes normalised by their std), and vote for
     (k, argmin over active dims).

  Dims whose global std is below ``prune_threshold`` (absolute, 0.05 as in
  disentanglement_lib's configs) are pruned. The majority-vote classifier maps each active
  dim to the factor it most often wins for; it is fit on ``num_train`` votes and the score
  is its accuracy on ``num_eval`` fresh votes. Range [0, 1]; chance level for a code that
  carries no information is about 1/K_eligible (slightly above, from majority voting).
  Returns 0.0 if no dim is active or no factor is eligible. For a faithful estimate each
  value of each factor should have many more rows than ``batch_size``; smaller groups are
  still usable (with replacement) but noisier.

  If ``return_details``, returns a dict with ``eval_accuracy`` (the score),
  ``train_accuracy``, ``num_active_dims``, ``active_dims`` (code dims kept),
  ``factor_columns`` (eligible factor columns) and the training ``votes``
  (len(factor_columns), num_active_dims) instead.
  """
  codes, factors = check_inputs(codes, factors)
  if batch_size < 2:
    raise ValueError("batch_size must be >= 2 (a variance is taken over the batch)")
  rng = np.random.default_rng(seed)
  global_var = codes.var(axis=0, ddof=1)
  active = np.nonzero(np.sqrt(global_var) >= prune_threshold)[0]

  # Group rows by (factor, value) into one concatenated index array; groups with >= 2 rows
  # are usable. eligible[e] = (factor column, row -> group id or -1).
  orders: list[np.ndarray] = []
  start_list: list[int] = []
  size_list: list[int] = []
  eligible: list[tuple[int, np.ndarray]] = []
  offset = 0
  for k in range(factors.shape[1]):
    vals, inv, counts = np.unique(factors[:, k], return_inverse=True, return_counts=True)
    big = counts >= 2
    if vals.size < 2 or not big.any():
      continue
    starts = offset + np.concatenate([[0], np.cumsum(counts)[:-1]])
    gid = np.full(vals.size, -1, dtype=np.int64)
    gid[big] = len(start_list) + np.arange(big.sum())
    start_list.extend(starts[big])
    size_list.extend(counts[big])
    orders.append(np.argsort(inv, kind="stable"))
    offset += factors.shape[0]
    eligible.append((k, gid[inv]))
  if active.size == 0 or not eligible:
    if return_details:
      return {
        "eval_accuracy": 0.0,
        "train_accuracy": 0.0,
        "num_active_dims": int(active.size),
        "active_dims": active,
        "factor_columns": np.array([k for k, _ in eligible], dtype=np.int64),
        "votes": np.zeros((len(eligible), active.size), dtype=np.int64),
      }
    return 0.0

  index = np.concatenate(orders)
  g_start = np.asarray(start_list, dtype=np.int64)
  g_size = np.asarray(size_list, dtype=np.int64)
  # Per eligible factor: rows that may serve as the reference row r (group size >= 2).
  ref_rows = [np.nonzero(rg >= 0)[0] for _, rg in eligible]
  codes_a = codes[:, active]
  gvar_a = global_var[active]

  def votes(num: int) -> np.ndarray:
    out = np.zeros((len(eligible), active.size), dtype=np.int64)
    chunk = max(1, (1 << 22) // max(1, batch_size * active.size))
    done = 0
    while done < num:
      n = min(chunk, num - done)
      fi = rng.integers(0, len(eligible), size=n)  # index into eligible
      g = np.empty(n, dtype=np.int64)
      for e in range(len(eligible)):
        sel = np.nonzero(fi == e)[0]
        if sel.size:
          rows = ref_rows[e][rng.integers(0, ref_rows[e].size, size=sel.size)]
          g[sel] = eligible[e][1][rows]
      pos = g_start[g][:, None] + (rng.random((n, batch_size)) * g_size[g][:, None]).astype(np.int64)
      pos = np.minimum(pos, g_start[g][:, None] + g_size[g][:, None] - 1)
      batch = codes_a[index[pos]]  # (n, batch_size, d_active)
      local_var = batch.var(axis=1, ddof=1)
      arg = np.argmin(local_var / gvar_a, axis=1)
      np.add.at(out, (fi, arg), 1)
      done += n
    return out

  train_votes = votes(int(num_train))
  classifier = majority_vote_classifier(train_votes)  # factor (eligible index) per active dim
  train_acc = majority_vote_accuracy(train_votes, classifier)
  eval_votes = votes(int(num_eval))
  eval_acc = majority_vote_accuracy(eval_votes, classifier)
  if return_details:
    return {
      "eval_accuracy": float(eval_acc),
      "train_accuracy": float(train_acc),
      "num_active_dims": int(active.size),
      "active_dims": active,
      "factor_columns": np.array([k for k, _ in eligible], dtype=np.int64),
      "votes": train_votes,
    }
  return float(eval_acc)


def majority_vote_classifier(votes) -> np.ndarray:
  """The factor each code dim is mapped to: the row of ``votes`` with most votes in its column.

  ``votes`` is (num_factors, num_dims) with ``votes[k, j]`` = how often dim j had the smallest
  normalised variance in a batch where factor k was held fixed. Ties go to the lowest factor.
  """
  return np.argmax(votes, axis=0)


def majority_vote_accuracy(votes, classifier) -> float:
  """Fraction of ``votes`` (num_factors, num_dims) that ``classifier`` (factor per dim) gets
  right: sum_j votes[classifier[j], j] / sum(votes); 0.0 if there are no votes."""
  votes = np.asarray(votes)
  cols = np.arange(votes.shape[1])
  return float(votes[classifier, cols].sum() / max(1, votes.sum()))
