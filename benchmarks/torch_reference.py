"""A straightforward PyTorch (eager) implementation of the dCVAE train step, for comparison with ours.

torch is NOT a dependency of dcvae_jax. To run this benchmark install the CPU build into the same venv:

  pip install torch==2.13.0        # or: pip install torch --index-url .../whl/cpu
  python benchmarks/torch_reference.py --json=benchmarks/results/torch_reference.json

The step is the same computation as the pipeline's ``dcvae`` step (dcvae_jax.models.objectives / estimators):
  x = (uint8 / 255 > 0.5) gathered from the training set by index, c = one_hot(condition, 10)
  encoder [x, c] 794 -> 512 -> 256 -> (mu, logvar) 10;  z = mu + exp(logvar / 2) * eps
  decoder [z, c] 20 -> 256 -> 512 -> 784 logits;  Bernoulli likelihood (BCE with logits, sum over pixels)
  learned factorised conditional prior r(z|c) = N(prior_mu[c], exp(prior_logvar[c])), 10 conditions
  loss = recon + 1 * MI + 6 * TC + 1 * DWKL, the conditional MSS decomposition (q(z|c) estimated on the batch's
  examples of the same condition, masks as in estimators.log_mixture_weights), batch mean; Adam(lr 1e-3).
No finiteness checks, no logged norms: the plain step a PyTorch user would write.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

try:
  import torch
  import torch.nn as nn
  import torch.nn.functional as F
except ImportError as e:  # pragma: no cover
  raise SystemExit("torch is not installed (it is not a dcvae_jax dependency): pip install torch==2.13.0") from e

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(x, mu, logvar):
  return -0.5 * (LOG_2PI + logvar + (x - mu) ** 2 * torch.exp(-logvar))


def kl_diag_gaussians(mu_q, logvar_q, mu_p, logvar_p):
  return 0.5 * (logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p) ** 2) * torch.exp(-logvar_p) - 1.0)


def log_mss_weights(cond, counts):
  """log w_ij (B, B) of the conditional MSS mixture (estimators.log_mixture_weights, method='mss')."""
  b = cond.shape[0]
  same = cond[:, None] == cond[None, :]
  m = same.sum(1).to(torch.float32)
  n = torch.maximum(counts[cond], m)
  m_col, n_col = m[:, None], n[:, None]
  idx = torch.arange(b, device=cond.device)
  eye = idx[:, None] == idx[None, :]
  offset = torch.where(same & ~eye, (idx[None, :] - idx[:, None]) % b, torch.full_like(eye, b, dtype=torch.long))
  designated = idx[None, :] == offset.argmin(1)[:, None]
  m1 = torch.clamp(m_col - 1.0, min=1.0)
  log_self = torch.where(m_col > 1.0, -torch.log(n_col), torch.zeros_like(n_col))
  log_strat = torch.log(n_col - m_col + 1.0) - torch.log(n_col) - torch.log(m1)
  log_rest = -torch.log(m1)
  logw = torch.where(eye, log_self, torch.where(designated, log_strat, log_rest))
  return torch.where(same, logw, torch.full_like(logw, -math.inf))


def elbo_decomposition(z, mu, logvar, cond, counts, prior_mu, prior_logvar):
  logw = log_mss_weights(cond, counts)
  pair = gaussian_log_density(z[:, None, :], mu[None, :, :], logvar[None, :, :])  # (i, j, k)
  log_qz = torch.logsumexp(logw + pair.sum(2), dim=1)
  log_qzj = torch.logsumexp(logw[:, :, None] + pair, dim=1)
  log_qz_x = gaussian_log_density(z, mu, logvar).sum(-1)
  log_pz = gaussian_log_density(z, prior_mu, prior_logvar)
  return {
    "mi": (log_qz_x - log_qz).mean(),
    "tc": (log_qz - log_qzj.sum(-1)).mean(),
    "dwkl": (log_qzj - log_pz).sum(-1).mean(),
  }


class DCVAE(nn.Module):
  def __init__(self, hidden=(512, 256), latent_dim=10, num_conditions=10, pixels=784):
    super().__init__()
    self.num_conditions = num_conditions
    h1, h2 = hidden
    self.enc1 = nn.Linear(pixels + num_conditions, h1)
    self.enc2 = nn.Linear(h1, h2)
    self.mu = nn.Linear(h2, latent_dim)
    self.logvar = nn.Linear(h2, latent_dim)
    self.dec1 = nn.Linear(latent_dim + num_conditions, h2)
    self.dec2 = nn.Linear(h2, h1)
    self.dec3 = nn.Linear(h1, pixels)
    self.prior_mu = nn.Parameter(torch.zeros(num_conditions, latent_dim))
    self.prior_logvar = nn.Parameter(torch.zeros(num_conditions, latent_dim))

  def loss(self, x, cond, counts, eps=None, alpha=1.0, tc_beta=6.0, gamma=1.0):
    """x float (B, 784) in {0,1}, cond int64 (B,), counts float (C,). Returns (loss, dict of terms)."""
    c = F.one_hot(cond, self.num_conditions).to(x.dtype)
    h = F.relu(self.enc2(F.relu(self.enc1(torch.cat([x, c], 1)))))
    mu, logvar = self.mu(h), self.logvar(h)
    if eps is None:
      eps = torch.randn_like(mu)
    z = mu + torch.exp(0.5 * logvar) * eps
    logits = self.dec3(F.relu(self.dec2(F.relu(self.dec1(torch.cat([z, c], 1))))))
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1).mean()
    pmu, plogvar = self.prior_mu[cond], self.prior_logvar[cond]
    kl = kl_diag_gaussians(mu, logvar, pmu, plogvar).sum(1).mean()
    terms = elbo_decomposition(z, mu, logvar, cond, counts, pmu, plogvar)
    loss = recon + alpha * terms["mi"] + tc_beta * terms["tc"] + gamma * terms["dwkl"]
    terms.update(loss=loss, recon=recon, kl=kl, elbo=recon + kl)
    return loss, terms


class TorchTrainer:
  """The training loop's step: gather the batch by index from the uint8 set, binarise, loss, backward, Adam."""

  def __init__(self, batch_size, hidden=(512, 256), seed=0, num_conditions=10):
    torch.manual_seed(seed)
    from common import synthetic_digits

    x, y = synthetic_digits(num_classes=num_conditions + 1)
    keep = y != 0  # leave-one-out run 0, as CompiledTrainer's first run: class 0 held out, conditions = y - 1
    self.x_all = torch.from_numpy(x[keep].reshape(-1, 784).copy())
    self.cond_all = torch.from_numpy(y[keep].astype(np.int64) - 1)
    self.counts = torch.bincount(self.cond_all, minlength=num_conditions).to(torch.float32)
    self.batch_size = batch_size
    self.model = DCVAE(hidden=hidden, num_conditions=num_conditions)
    self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
    self.rng = np.random.default_rng(seed)
    self.perm, self.pos = None, 0

  def batch_indices(self):
    n = self.x_all.shape[0]
    if self.perm is None or self.pos + self.batch_size > n:
      self.perm, self.pos = torch.from_numpy(self.rng.permutation(n)), 0
    idx = self.perm[self.pos : self.pos + self.batch_size]
    self.pos += self.batch_size
    return idx

  def step(self):
    idx = self.batch_indices()
    x = (self.x_all[idx].to(torch.float32) / 255.0 > 0.5).to(torch.float32)
    loss, _ = self.model.loss(x, self.cond_all[idx], self.counts)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    return loss

  def run(self, steps):
    for _ in range(steps):
      loss = self.step()
    return float(loss.detach())


def copy_flax_params(model: DCVAE, params):
  """Load the Flax params of dcvae_jax's VAE (learned_prior, MLP 2 layers) into ``model``."""
  p = params["params"]
  enc, dec = p["encoder"], p["decoder"]
  pairs = [
    (model.enc1, enc["Dense_0"]),
    (model.enc2, enc["Dense_1"]),
    (model.mu, enc["mu"]),
    (model.logvar, enc["logvar"]),
    (model.dec1, dec["Dense_0"]),
    (model.dec2, dec["Dense_1"]),
    (model.dec3, dec["Dense_2"]),
  ]
  with torch.no_grad():
    for lin, d in pairs:
      lin.weight.copy_(torch.from_numpy(np.asarray(d["kernel"]).T.copy()))
      lin.bias.copy_(torch.from_numpy(np.asarray(d["bias"]).copy()))
    model.prior_mu.copy_(torch.from_numpy(np.asarray(p["prior_mu"]).copy()))
    model.prior_logvar.copy_(torch.from_numpy(np.asarray(p["prior_logvar"]).copy()))


def torch_grads_as_flax(model: DCVAE) -> dict:
  """The model's .grad in the Flax param layout (kernel = weight.T), as numpy."""

  def lin(m):
    return {"kernel": m.weight.grad.numpy().T, "bias": m.bias.grad.numpy()}

  return {
    "params": {
      "encoder": {
        "Dense_0": lin(model.enc1),
        "Dense_1": lin(model.enc2),
        "mu": lin(model.mu),
        "logvar": lin(model.logvar),
      },
      "decoder": {"Dense_0": lin(model.dec1), "Dense_1": lin(model.dec2), "Dense_2": lin(model.dec3)},
      "prior_mu": model.prior_mu.grad.numpy(),
      "prior_logvar": model.prior_logvar.grad.numpy(),
    }
  }


def time_torch(trainer: TorchTrainer, seconds: float, min_steps: int = 20) -> float:
  """images/s over at least ``seconds`` of consecutive steps."""
  steps = 0
  t0 = time.perf_counter()
  while steps < min_steps or time.perf_counter() - t0 < seconds:
    trainer.run(10)
    steps += 10
  return steps * trainer.batch_size / (time.perf_counter() - t0)


def main():
  import common

  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch_sizes", default="64,256")
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--seconds", type=float, default=2.0, help="per repetition and batch size")
  p.add_argument(
    "--no_wait", action="store_true", help="measure at once: no waiting for a quiet machine, busy repetitions kept"
  )
  p.add_argument("--json", default=None)
  a = p.parse_args()
  quiet = None if a.no_wait else common.wait_for_quiet()
  sizes = [int(b) for b in a.batch_sizes.split(",")]
  trainers = {b: TorchTrainer(b) for b in sizes}
  for t in trainers.values():
    t.run(30)  # warm-up
  rates = common.interleave(
    {b: (lambda t=t: time_torch(t, a.seconds)) for b, t in trainers.items()},
    a.reps,
    log=print,
    max_discards=0 if a.no_wait else None,
  )
  foreign = rates.pop("_foreign")
  discarded = rates.pop("_discarded")
  common.write_json(
    a.json,
    {
      "benchmark": "torch_reference",
      "torch": torch.__version__,
      "torch_threads": torch.get_num_threads(),
      "images_per_second": {str(b): float(np.median(r)) for b, r in rates.items()},
      "images_per_second_reps": {str(b): r for b, r in rates.items()},
      "load": {
        "foreign_cpu_fraction_per_rep": foreign,
        "discarded_busy_reps": discarded,
        "foreign_cpu_fraction_median": float(np.median(foreign)),
        "wait_for_quiet": quiet,
        "load_average_after": os.getloadavg(),
      },
      "machine": common.machine(),
    },
  )


if __name__ == "__main__":
  main()
