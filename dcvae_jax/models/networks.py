"""Flax modules: encoders, decoders (MLP and conv), the conditional prior, relevance, the discriminator.

Conditioning (Pol et al. 2019): the one-hot condition c is concatenated to the encoder's input features and to
the decoder's input code. Unconditional models get ``c = None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


def _f32(x):
  """Outputs leave the network in float32: losses and estimators always run in full precision."""
  return x.astype(jnp.float32)


def _with_condition(h: jnp.ndarray, c: jnp.ndarray | None) -> jnp.ndarray:
  return h if c is None else jnp.concatenate([h, c.astype(h.dtype)], axis=-1)


class MLPEncoder(nn.Module):
  """x (B,H,W,C) [, c (B,K)] -> (mu, logvar), each (B, latent_dim)."""

  hidden: Sequence[int]
  latent_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, c=None, return_hidden=False):
    h = _with_condition(x.reshape((x.shape[0], -1)), c)
    hiddens = []
    for width in self.hidden:
      h = nn.relu(nn.Dense(width, dtype=self.dtype)(h))
      hiddens.append(_f32(h))
    mu = _f32(nn.Dense(self.latent_dim, name="mu", dtype=self.dtype)(h))
    logvar = _f32(nn.Dense(self.latent_dim, name="logvar", dtype=self.dtype)(h))
    return (mu, logvar, hiddens) if return_hidden else (mu, logvar)


class MLPDecoder(nn.Module):
  """z (B,d) [, c] -> Bernoulli/Gaussian-mean logits (B,H,W,C)."""

  hidden: Sequence[int]
  image_shape: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, c=None):
    h = _with_condition(z, c)
    for width in reversed(self.hidden):
      h = nn.relu(nn.Dense(width, dtype=self.dtype)(h))
    size = 1
    for s in self.image_shape:
      size *= s
    return _f32(nn.Dense(size, dtype=self.dtype)(h)).reshape((z.shape[0], *self.image_shape))


def conv_sides(side: int, layers: int) -> list[int]:
  """The side lengths through ``layers`` stride-2 "SAME" convolutions: s_0 = side, s_{l+1} = ceil(s_l / 2).
  Any size works: an odd side rounds up, and a side of 1 stays 1."""
  sides = [int(side)]
  for _ in range(layers):
    sides.append(-(-sides[-1] // 2))
  return sides


class ConvEncoder(nn.Module):
  """Stride-2 4x4 convolutions (channels ``hidden[:-1]``), then Dense(hidden[-1]); c joins after flattening.
  Any H x W x C: side s becomes ceil(s / 2) at every layer (:func:`conv_sides`)."""

  hidden: Sequence[int]
  latent_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, c=None, return_hidden=False):
    channels = tuple(self.hidden[:-1]) or (32, 64)
    h = x
    hiddens = []
    for ch in channels:
      h = nn.relu(nn.Conv(ch, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype)(h))
      hiddens.append(_f32(h.reshape((h.shape[0], -1))))
    h = _with_condition(h.reshape((h.shape[0], -1)), c)
    h = nn.relu(nn.Dense(self.hidden[-1], dtype=self.dtype)(h))
    hiddens.append(_f32(h))
    mu = _f32(nn.Dense(self.latent_dim, name="mu", dtype=self.dtype)(h))
    logvar = _f32(nn.Dense(self.latent_dim, name="logvar", dtype=self.dtype)(h))
    return (mu, logvar, hiddens) if return_hidden else (mu, logvar)


class ConvDecoder(nn.Module):
  """Mirror of ConvEncoder: Dense -> (h_L, w_L, ch) -> one stride-2 transposed convolution per encoder layer ->
  logits (B, H, W, C). Layer l doubles the side s_{l+1} to 2 s_{l+1} and keeps the first s_l rows and columns
  (one fewer where the encoder rounded an odd s_l up), so the output is H x W for any size (sides that halve
  exactly, e.g. 28 = 4 x 7, crop nothing)."""

  hidden: Sequence[int]
  image_shape: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, c=None):
    channels = tuple(self.hidden[:-1]) or (32, 64)
    height, width, out_ch = self.image_shape
    hs, ws = conv_sides(height, len(channels)), conv_sides(width, len(channels))
    h = nn.relu(nn.Dense(self.hidden[-1], dtype=self.dtype)(_with_condition(z, c)))
    h = nn.relu(nn.Dense(hs[-1] * ws[-1] * channels[-1], dtype=self.dtype)(h))
    h = h.reshape((z.shape[0], hs[-1], ws[-1], channels[-1]))
    for level, ch in enumerate((*reversed(channels[:-1]), out_ch)):
      h = nn.ConvTranspose(ch, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype)(h)
      top = len(channels) - 1 - level  # the encoder level this layer restores
      h = h[:, : hs[top], : ws[top]]
      if level < len(channels) - 1:
        h = nn.relu(h)
    return _f32(h)


OBS_LOGVAR_INIT = -2.0  # sigma ~ 0.37 on [0, 1] pixels
OBS_LOGVAR_MIN = -9.0  # sigma ~ 0.011, about 3 grey levels: a floor, so no pixel's density is unbounded
OBS_LOGVAR_MAX = 3.0

ENCODERS = {"mlp": MLPEncoder, "conv": ConvEncoder}
DECODERS = {"mlp": MLPDecoder, "conv": ConvDecoder}


class VAE(nn.Module):
  """Encoder, decoder and, where the model asks for them, a learned conditional prior and a relevance vector.

  learned_prior: r(z|c) = prod_j N(z_j; m_j(c), exp(s_j(c))), one row of (m, s) per condition, initialised
  to N(0, I). relevance: r = sigmoid(rho) in [0,1]^d (RF-VAE), initialised at r = 0.5.
  """

  arch: str
  hidden: Sequence[int]
  latent_dim: int
  image_shape: Sequence[int]
  num_conditions: int = 0
  learned_prior: bool = False
  relevance: bool = False
  obs_variance: str = "none"  # Gaussian likelihood: "none" (no learned variance), "global" or "per_pixel"
  dtype: Any = jnp.float32  # compute dtype (bfloat16 for mixed precision); params stay float32

  def setup(self):
    self.encoder = ENCODERS[self.arch](self.hidden, self.latent_dim, dtype=self.dtype)
    self.decoder = DECODERS[self.arch](self.hidden, self.image_shape, dtype=self.dtype)
    if self.learned_prior:
      self.prior_mu = self.param("prior_mu", nn.initializers.zeros, (self.num_conditions, self.latent_dim))
      self.prior_logvar = self.param("prior_logvar", nn.initializers.zeros, (self.num_conditions, self.latent_dim))
    if self.relevance:
      self.rho = self.param("relevance_logit", nn.initializers.zeros, (self.latent_dim,))
    if self.obs_variance != "none":
      shape = () if self.obs_variance == "global" else tuple(self.image_shape)
      self.obs_logvar_param = self.param("obs_logvar", nn.initializers.constant(OBS_LOGVAR_INIT), shape)

  def encode(self, x, c=None):
    return self.encoder(x, c)

  def encode_hidden(self, x, c=None):
    """The encoder's hidden activations (each flattened to (B, width)) followed by mu: RaPP's layers."""
    mu, _, hiddens = self.encoder(x, c, return_hidden=True)
    return [*hiddens, mu]

  def obs_logvar(self):
    """log sigma^2 of a Gaussian likelihood with learned variance, clipped to [OBS_LOGVAR_MIN, OBS_LOGVAR_MAX]
    (a pixel that is always 0 would otherwise drive its variance, and the likelihood, to infinity)."""
    if self.obs_variance == "none":
      return jnp.zeros(())
    return jnp.clip(self.obs_logvar_param, OBS_LOGVAR_MIN, OBS_LOGVAR_MAX)

  def decode(self, z, c=None):
    return self.decoder(z, c)

  def prior(self, cond_ids):
    """(mu, logvar) of the prior for integer conditions (B,); N(0, I) unless learned.

    Learned: row c of (m, s) for a condition id c in 0..C-1, and N(0, I) for any other id (the all-zero
    condition vector, id C, that scoring gives an image whose class is no condition): the prior read as linear
    in the one-hot condition, (m(c), s(c)) = c^T (M, S), which is 0 at c = 0. Plain indexing would clamp id C
    (and wrap id -1) to row C-1, the prior of the last normal class."""
    if not self.learned_prior:
      zeros = jnp.zeros((cond_ids.shape[0], self.latent_dim))
      return zeros, zeros
    valid = ((cond_ids >= 0) & (cond_ids < self.num_conditions))[:, None]
    rows = jnp.clip(cond_ids, 0, self.num_conditions - 1)
    return jnp.where(valid, self.prior_mu[rows], 0.0), jnp.where(valid, self.prior_logvar[rows], 0.0)

  def relevance_vector(self):
    return nn.sigmoid(self.rho) if self.relevance else jnp.ones((self.latent_dim,))

  def __call__(self, x, c=None, cond_ids=None):
    """Touches every parameter (used by init): returns (mu, logvar, logits, prior, relevance)."""
    mu, logvar = self.encode(x, c)
    ids = jnp.zeros((x.shape[0],), jnp.int32) if cond_ids is None else cond_ids
    return mu, logvar, self.decode(mu, c), self.prior(ids), self.relevance_vector(), self.obs_logvar()


class Discriminator(nn.Module):
  """FactorVAE density-ratio discriminator: ``layers`` x Dense(width) leaky-ReLU(0.2), then 2 logits.

  logit 0: "z drawn from q(z)"; logit 1: "z drawn from prod_j q(z_j)" (dimension-wise permuted codes).
  """

  layers: int = 6
  width: int = 1000
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    h = z
    for _ in range(self.layers):
      h = nn.leaky_relu(nn.Dense(self.width, dtype=self.dtype)(h), 0.2)
    return _f32(nn.Dense(2, dtype=self.dtype)(h))
