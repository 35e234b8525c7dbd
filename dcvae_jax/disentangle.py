"""Disentanglement metrics on encoder means and known ground-truth factors (numpy/sklearn).

All metrics take ``codes`` (N, d) float -- e.g. the encoder means of a VAE on a labelled
dataset -- and ``factors`` (N, K) int, the discrete ground-truth factor indices of the same
examples. They follow the original papers and the recipes of google-research/
disentanglement_lib, adapted to a *finite* dataset of (code, factor) pairs instead of a
ground-truth simulator; the deviations are listed per function.

Degenerate inputs (documented, never NaN):

* **single-valued factors** (a factor column with one distinct value) carry no information
  and are dropped by every metric (MIG, FactorVAE, DCI, SAP). If *no* factor has two or more
  values every metric returns 0.0.
* **constant code dims** (zero variance) are handled naturally: MIG puts them in one bin
  (MI = 0); FactorVAE prunes them; DCI's trees never split on them (importance 0); SAP scores
  them as a constant predictor (chance accuracy for discrete factors, R^2 = 0 for
  continuous). An all-constant code therefore scores 0 on MIG, FactorVAE, SAP and DCI
  disentanglement/completeness (DCI informativeness is then the majority-class accuracy).
* ``d == 1``: the MIG/SAP "second best" code is taken as 0 (MI) / the chance score.

Non-finite codes raise ``ValueError``.
"""
from __future__ import annotations

import numpy as np
import scipy.stats
from sklearn.metrics import mutual_info_score

__all__ = [
    "discretize",
    "mutual_info_matrix",
    "mig",
    "mig_per_factor",
    "factor_vae_score",
    "dci",
    "sap",
    "compute_all",
]


# ----------------------------------------------------------------------------- helpers


def _check(codes, factors):
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors)
    if codes.ndim == 1:
        codes = codes[:, None]
    if factors.ndim == 1:
        factors = factors[:, None]
    if codes.ndim != 2 or factors.ndim != 2:
        raise ValueError(f"codes and factors must be 2-D, got {codes.shape}, {factors.shape}")
    if codes.shape[0] != factors.shape[0]:
        raise ValueError(f"codes ({codes.shape[0]}) and factors ({factors.shape[0]}) differ in N")
    if codes.shape[0] < 2:
        raise ValueError("need at least 2 examples")
    if not np.issubdtype(factors.dtype, np.integer):
        if not np.all(np.equal(np.mod(factors, 1), 0)):
            raise ValueError("factors must be discrete (integer-valued)")
        factors = factors.astype(np.int64)
    if not np.all(np.isfinite(codes)):
        raise ValueError("codes contain non-finite values")
    return codes, factors


def _informative_factors(factors: np.ndarray) -> np.ndarray:
    """Indices of factor columns with at least two distinct values."""
    return np.array(
        [k for k in range(factors.shape[1]) if np.unique(factors[:, k]).size > 1], dtype=np.int64
    )


def discretize(codes, num_bins: int = 20) -> np.ndarray:
    """Per-dimension equal-width histogram binning, int (N, d) with values in [0, num_bins).

    Bin edges are ``np.histogram_bin_edges(codes[:, j], num_bins)``; bins are half-open
    ``[e_i, e_{i+1})`` except the last, which is closed (exactly ``np.histogram``'s rule).
    A constant dim lands in a single bin.
    """
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim == 1:
        codes = codes[:, None]
    out = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, j], bins=num_bins)
        out[:, j] = np.digitize(codes[:, j], edges[1:-1], right=False)
    return out


def mutual_info_matrix(discrete_codes, factors) -> np.ndarray:
    """MI (nats) between every discrete code dim and factor, (d, K), via sklearn."""
    d, K = discrete_codes.shape[1], factors.shape[1]
    m = np.zeros((d, K))
    for i in range(d):
        for k in range(K):
            m[i, k] = mutual_info_score(factors[:, k], discrete_codes[:, i])
    return m


# ----------------------------------------------------------------------------- MIG


def mig_per_factor(codes, factors, *, num_bins: int = 20) -> np.ndarray:
    """Normalised MI gap per factor, (K,); NaN for single-valued factors (excluded by ``mig``).

    gap_k = (I(z_a; v_k) - I(z_b; v_k)) / H(v_k), with a, b the two code dims of highest MI
    with factor k (the second-best MI is 0 if d == 1).
    """
    codes, factors = _check(codes, factors)
    m = mutual_info_matrix(discretize(codes, num_bins), factors)
    h = np.array([mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])
    top = np.sort(m, axis=0)[::-1]
    second = top[1] if top.shape[0] > 1 else np.zeros(factors.shape[1])
    gaps = np.full(factors.shape[1], np.nan)
    ok = h > 0
    gaps[ok] = (top[0, ok] - second[ok]) / h[ok]
    return gaps


def mig(codes, factors, *, num_bins: int = 20) -> float:
    """Mutual Information Gap (Chen et al. 2018, "Isolating Sources of Disentanglement").

    Each code dim is discretised into ``num_bins`` equal-width bins (disentanglement_lib's
    histogram discretiser), the discrete MI with each factor is computed with
    ``sklearn.metrics.mutual_info_score`` and normalised by the factor's entropy, and the gap
    between the two most informative dims is averaged over factors. Range [0, 1]. Factors with
    a single value are skipped; returns 0.0 if none remain.
    """
    gaps = mig_per_factor(codes, factors, num_bins=num_bins)
    gaps = gaps[np.isfinite(gaps)]
    return float(gaps.mean()) if gaps.size else 0.0


# ----------------------------------------------------------------------------- FactorVAE


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
    codes, factors = _check(codes, factors)
    if batch_size < 2:
        raise ValueError("batch_size must be >= 2 (a variance is taken over the batch)")
    rng = np.random.default_rng(seed)
    global_var = codes.var(axis=0, ddof=1)
    active = np.nonzero(np.sqrt(global_var) >= prune_threshold)[0]

    # Group rows by (factor, value) into one concatenated index array; groups with >= 2 rows
    # are usable. eligible[e] = (factor column, row -> group id or -1).
    orders, g_start, g_size, eligible = [], [], [], []
    offset = 0
    for k in range(factors.shape[1]):
        vals, inv, counts = np.unique(factors[:, k], return_inverse=True, return_counts=True)
        big = counts >= 2
        if vals.size < 2 or not big.any():
            continue
        starts = offset + np.concatenate([[0], np.cumsum(counts)[:-1]])
        gid = np.full(vals.size, -1, dtype=np.int64)
        gid[big] = len(g_start) + np.arange(big.sum())
        g_start.extend(starts[big])
        g_size.extend(counts[big])
        orders.append(np.argsort(inv, kind="stable"))
        offset += factors.shape[0]
        eligible.append((k, gid[inv]))
    if active.size == 0 or not eligible:
        if return_details:
            return {"eval_accuracy": 0.0, "train_accuracy": 0.0,
                    "num_active_dims": int(active.size), "active_dims": active,
                    "factor_columns": np.array([k for k, _ in eligible], dtype=np.int64),
                    "votes": np.zeros((len(eligible), active.size), dtype=np.int64)}
        return 0.0

    index = np.concatenate(orders)
    g_start = np.asarray(g_start, dtype=np.int64)
    g_size = np.asarray(g_size, dtype=np.int64)
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
            pos = g_start[g][:, None] + (rng.random((n, batch_size)) * g_size[g][:, None]).astype(
                np.int64
            )
            pos = np.minimum(pos, g_start[g][:, None] + g_size[g][:, None] - 1)
            batch = codes_a[index[pos]]  # (n, batch_size, d_active)
            local_var = batch.var(axis=1, ddof=1)
            arg = np.argmin(local_var / gvar_a, axis=1)
            np.add.at(out, (fi, arg), 1)
            done += n
        return out

    train_votes = votes(int(num_train))
    classifier = np.argmax(train_votes, axis=0)  # factor (eligible index) per active dim
    cols = np.arange(active.size)
    train_acc = train_votes[classifier, cols].sum() / max(1, train_votes.sum())
    eval_votes = votes(int(num_eval))
    eval_acc = eval_votes[classifier, cols].sum() / max(1, eval_votes.sum())
    if return_details:
        return {"eval_accuracy": float(eval_acc), "train_accuracy": float(train_acc),
                "num_active_dims": int(active.size), "active_dims": active,
                "factor_columns": np.array([k for k, _ in eligible], dtype=np.int64),
                "votes": train_votes}
    return float(eval_acc)


# ----------------------------------------------------------------------------- DCI


def _split(n: int, test_fraction: float, rng: np.random.Generator):
    perm = rng.permutation(n)
    n_test = min(n - 1, max(1, int(round(test_fraction * n))))
    return perm[n_test:], perm[:n_test]


def _make_tree_model(estimator: str, seed: int, n_jobs):
    if estimator == "forest":
        from sklearn.ensemble import RandomForestClassifier

        # Bagged trees over *all* features: with per-split feature subsampling
        # (max_features="sqrt") trees are forced onto uninformative dims, which smears the
        # importances and caps D/C for a perfectly disentangled code near 0.5.
        return RandomForestClassifier(
            n_estimators=50, max_features=None, min_samples_leaf=5, random_state=seed,
            n_jobs=n_jobs,
        )
    if estimator == "gbt":  # disentanglement_lib's default (slow for many-valued factors)
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(random_state=seed)
    raise ValueError(f"unknown estimator {estimator!r}; use 'forest' or 'gbt'")


def dci(
    codes,
    factors,
    *,
    seed: int = 0,
    test_fraction: float = 0.25,
    estimator: str = "forest",
    n_jobs=-1,
    return_importance: bool = False,
) -> dict:
    """DCI disentanglement / completeness / informativeness (Eastwood & Williams 2018).

    Rows are split at random (``seed``) into train / test (``test_fraction``). For every
    informative factor a tree-ensemble classifier predicts the factor from all code dims;
    its impurity-based feature importances form column k of the importance matrix R (d, K).
    By default the ensemble is a random forest of 50 bagged trees over all features
    (``estimator="forest"``, ~1 s for N=2000, d=10, K=5); ``estimator="gbt"`` uses
    disentanglement_lib's ``GradientBoostingClassifier()`` (much slower).

    * disentanglement = sum_i rho_i (1 - H_K(R_i.)), rho_i = R_i. / sum(R)
    * completeness    = sum_k rho_k (1 - H_d(R_.k)), rho_k = R_.k / sum(R)
    * informativeness = mean test accuracy over factors (not an error, higher is better)

    where H_b is the entropy (base b) of the normalised row/column. Single-valued factors are
    dropped. With only one informative factor, disentanglement is 1 (a dim can only relate to
    one factor) if any dim is used; with d == 1 completeness is 1 likewise. If R is all zero
    (e.g. all dims constant), disentanglement = completeness = 0. No informative factor: all 0.
    """
    codes, factors = _check(codes, factors)
    keep = _informative_factors(factors)
    d = codes.shape[1]
    out = {"disentanglement": 0.0, "completeness": 0.0, "informativeness": 0.0}
    if keep.size == 0:
        if return_importance:
            out["importance_matrix"] = np.zeros((d, 0))
        return out
    factors = factors[:, keep]
    K = factors.shape[1]
    rng = np.random.default_rng(seed)
    tr, te = _split(codes.shape[0], test_fraction, rng)
    R = np.zeros((d, K))
    accs = np.zeros(K)
    for k in range(K):
        y_tr, y_te = factors[tr, k], factors[te, k]
        if np.unique(y_tr).size < 2:  # pathological split: predict the only training value
            accs[k] = np.mean(y_te == y_tr[0])
            continue
        model = _make_tree_model(estimator, seed, n_jobs)
        model.fit(codes[tr], y_tr)
        R[:, k] = np.abs(model.feature_importances_)
        accs[k] = model.score(codes[te], y_te)
    out["informativeness"] = float(accs.mean())
    total = R.sum()
    if total > 0:
        eps = 1e-11
        if K > 1:
            d_per = 1.0 - scipy.stats.entropy(R.T + eps, base=K)
        else:
            d_per = np.ones(d)
        if d > 1:
            c_per = 1.0 - scipy.stats.entropy(R + eps, base=d)
        else:
            c_per = np.ones(K)
        out["disentanglement"] = float(np.sum(d_per * R.sum(axis=1) / total))
        out["completeness"] = float(np.sum(c_per * R.sum(axis=0) / total))
    if return_importance:
        out["importance_matrix"] = R  # (d, K_informative), columns = informative factors
    return out


# ----------------------------------------------------------------------------- SAP


def sap(
    codes,
    factors,
    *,
    continuous: bool = False,
    classifier: str = "threshold",
    seed: int = 0,
    test_fraction: float = 0.25,
    return_matrix: bool = False,
):
    """Separated Attribute Predictability (Kumar et al. 2018, DIP-VAE, Sec. 3).

    Builds a (d, K) score matrix S -- how well code dim i alone predicts factor k -- and
    returns the mean over factors of the gap between the two highest entries of each column.

    * ``continuous=True``: S_ik = R^2 = corr(z_i, v_k)^2 (0 for a constant dim), on all rows.
    * ``continuous=False`` (default): S_ik = held-out accuracy of a 1-D classifier trained on
      z_i (rows split at random by ``seed`` into train/test). ``classifier="threshold"``
      (default) is a class-balanced depth-limited decision tree on the single dim, i.e. a set
      of thresholds (at most ``2 * n_values`` leaves, >= 10 rows per leaf); it can isolate
      each value of a many-valued factor on a monotone code.
      ``classifier="linear_svm"`` is disentanglement_lib's ``LinearSVC(C=0.01,
      class_weight="balanced")``; one-vs-rest linear scores on one feature cannot carve out
      middle values, so it scores a perfect code far below 1 for factors with many values
      (e.g. ~0.18 instead of ~0.85 on a 5-factor identity code).

    A constant dim is scored as a constant predictor: the test frequency of the majority
    training class (discrete) or 0 (continuous). Single-valued factors are dropped.
    Range [0, 1]; 0.0 if no informative factor.
    """
    codes, factors = _check(codes, factors)
    keep = _informative_factors(factors)
    d = codes.shape[1]
    if keep.size == 0:
        return (0.0, np.zeros((d, 0))) if return_matrix else 0.0
    factors = factors[:, keep]
    K = factors.shape[1]
    std = codes.std(axis=0)
    const = std <= 1e-12 * np.maximum(1.0, np.abs(codes).max(axis=0))
    z = np.where(const, 0.0, (codes - codes.mean(axis=0)) / np.where(const, 1.0, std))
    S = np.zeros((d, K))
    chance = np.zeros(K)  # score of a constant predictor
    if continuous:
        f = factors.astype(np.float64)
        fz = (f - f.mean(axis=0)) / f.std(axis=0)
        corr = z.T @ fz / codes.shape[0]
        S = np.where(const[:, None], 0.0, corr**2)
    else:
        rng = np.random.default_rng(seed)
        tr, te = _split(codes.shape[0], test_fraction, rng)
        for k in range(K):
            y_tr, y_te = factors[tr, k], factors[te, k]
            vals, counts = np.unique(y_tr, return_counts=True)
            chance[k] = np.mean(y_te == vals[np.argmax(counts)])
            for i in range(d):
                if const[i] or vals.size < 2:
                    S[i, k] = chance[k]
                    continue
                model = _make_1d_classifier(classifier, vals.size, seed)
                model.fit(z[tr, i : i + 1], y_tr)
                S[i, k] = model.score(z[te, i : i + 1], y_te)
    top = np.sort(S, axis=0)[::-1]
    # d == 1: the runner-up is a constant predictor.
    second = top[1] if d > 1 else np.minimum(top[0], chance)
    score = float(np.mean(top[0] - second))
    return (score, S) if return_matrix else score


def _make_1d_classifier(kind: str, n_classes: int, seed: int):
    if kind == "threshold":
        from sklearn.tree import DecisionTreeClassifier

        return DecisionTreeClassifier(
            max_leaf_nodes=max(2, 2 * n_classes), min_samples_leaf=10,
            class_weight="balanced", random_state=seed,
        )
    if kind == "linear_svm":
        from sklearn.svm import LinearSVC

        return LinearSVC(C=0.01, class_weight="balanced")
    raise ValueError(f"unknown classifier {kind!r}; use 'threshold' or 'linear_svm'")


# ----------------------------------------------------------------------------- all


def compute_all(codes, factors, seed: int = 0) -> dict:
    """All metrics with default settings, as a flat JSON-ready ``{name: float}`` dict.

    Keys: ``mig``, ``factor_vae``, ``dci_disentanglement``, ``dci_completeness``,
    ``dci_informativeness``, ``sap`` (discrete-factor SAP).
    """
    codes, factors = _check(codes, factors)
    d = dci(codes, factors, seed=seed)
    return {
        "mig": float(mig(codes, factors)),
        "factor_vae": float(factor_vae_score(codes, factors, seed=seed)),
        "dci_disentanglement": float(d["disentanglement"]),
        "dci_completeness": float(d["completeness"]),
        "dci_informativeness": float(d["informativeness"]),
        "sap": float(sap(codes, factors, seed=seed)),
    }
