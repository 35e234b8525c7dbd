"""Host-side batch sampling (train.batch_sampling): stratified groups, epoch coverage, determinism, resume,
per-device shards, config errors; uniform sampling unchanged."""

import os
import shutil

import jax
import numpy as np
import pytest

from dcvae_jax import distributed, errors, validation
from dcvae_jax.data import input_pipeline, protocols
from dcvae_jax.data.protocols import Run
from dcvae_jax.models import objectives
from dcvae_jax.models import registry as models
from tests.helpers import assert_trees_equal, tiny_config, toy_dataset, train_toy

# Unequal classes: 0..4 normal (sizes 300, 250, 203, 120, 41), 5 held out.
SIZES = (300, 250, 203, 120, 41, 77)
RUN = Run(name="class5_seed0", label="5", seed=0, normal=(0, 1, 2, 3, 4), anomalous=(5,), uid=5)


def _labels(seed=0):
  y = np.repeat(np.arange(len(SIZES)), SIZES).astype(np.int32)
  return y[np.random.default_rng(seed).permutation(y.size)]


def _stratified(y, p=8, k=4, epochs=3, run=RUN):
  return input_pipeline.RunData.build(
    run, y, p * k, epochs, sampling="stratified", per_condition=p, conditions_per_batch=k
  )


def test_stratified_batches_are_whole_groups_of_distinct_conditions():
  y = _labels()
  d = _stratified(y)
  for step in range(d.total_steps):
    batch = d.batch_indices(step, 32)
    assert batch.shape == (32,)
    assert np.all(np.isin(y[batch], RUN.normal))
    groups = d.cond_all[batch].reshape(4, 8)  # 4 consecutive groups of per_condition = 8
    assert np.all(groups == groups[:, :1]), groups
    assert len(set(groups[:, 0].tolist())) == 4


def test_stratified_epoch_sees_every_example_at_most_once_and_all_up_to_remainders():
  y = _labels()
  d = _stratified(y)
  counts = np.asarray([SIZES[c] for c in RUN.normal])
  chunks = counts // 8  # 37, 31, 25, 15, 5 -> 113 chunks
  # The largest S with sum_c min(chunks_c, S) >= 4 S: 20 (20+20+20+15+5 = 80; S = 21 gives 83 < 84): with
  # one class much larger than the others, its excess chunks cannot go into batches of distinct conditions.
  assert d.steps_per_epoch == 20 == max(s for s in range(1, 200) if np.minimum(chunks, s).sum() >= 4 * s)
  assert d.chunks_per_epoch.sum() == 4 * 20 and np.all(d.chunks_per_epoch <= np.minimum(chunks, 20))
  seen_all = set()
  for epoch in range(3):
    order = np.concatenate([d.batch_indices(epoch * 20 + s, 32) for s in range(20)])
    assert len(set(order.tolist())) == order.size == 20 * 32  # nobody twice in an epoch
    per_class = np.bincount(d.cond_all[order], minlength=5)
    np.testing.assert_array_equal(per_class, d.chunks_per_epoch * 8)
    seen_all |= set(order.tolist())
  # Which chunks are left out changes from epoch to epoch: three epochs reach most of the examples.
  assert len(seen_all) > 0.9 * counts.sum()
  # Balanced classes: an epoch leaves out only each class's remainder (< per_condition examples each).
  yb = np.repeat(np.arange(6), 100).astype(np.int32)
  db = _stratified(yb, p=8, k=5, epochs=1)
  order = np.concatenate([db.batch_indices(s, 40) for s in range(db.steps_per_epoch)])
  assert order.size == 5 * (100 - 100 % 8) and len(set(order.tolist())) == order.size


def test_order_is_a_pure_function_of_seed_uid_epoch():
  y = _labels()
  walked = _stratified(y)
  seq = [walked.batch_indices(s, 32) for s in range(walked.total_steps)]
  for s in (0, 19, 20, 21, 40, 59):  # a fresh sampler (a resumed run)
    np.testing.assert_array_equal(_stratified(y).batch_indices(s, 32), seq[s])
  assert not np.array_equal(seq[0], seq[20])  # epochs differ
  other = _stratified(y, run=Run(name="x", label="x", seed=0, normal=RUN.normal, anomalous=(5,), uid=6))
  assert not np.array_equal(other.batch_indices(0, 32), seq[0])  # runs differ


def test_uniform_sampling_is_unchanged():
  """The uniform order is bitwise the one before stratified sampling existed."""
  y = _labels()
  d = input_pipeline.RunData.build(RUN, y, 32, 2)
  assert d.sampling == "uniform" and d.steps_per_epoch == (y != 5).sum() // 32
  for step in (0, 5, d.steps_per_epoch, d.steps_per_epoch + 3):
    epoch, pos = divmod(step, d.steps_per_epoch)
    perm = d.indices[np.random.default_rng([RUN.seed, RUN.uid, epoch]).permutation(d.indices.size)]
    np.testing.assert_array_equal(d.batch_indices(step, 32), perm[pos * 32 : (pos + 1) * 32])


def _cfg(**train_fields):
  c = tiny_config("dcvae")
  for k, v in train_fields.items():
    setattr(c.train, k, v)
  return c


def test_sampling_options_and_config_errors():
  assert input_pipeline.sampling_options(_cfg()) == dict(sampling="uniform")
  opts = input_pipeline.sampling_options(_cfg(batch_sampling="stratified", per_condition=8))  # batch 32 -> 4 x 8
  assert opts == dict(sampling="stratified", per_condition=8, conditions_per_batch=4)
  assert input_pipeline.sampling_options(
    _cfg(batch_sampling="stratified", per_condition=0, conditions_per_batch=2)
  ) == dict(sampling="stratified", per_condition=16, conditions_per_batch=2)
  bad = [
    (dict(batch_sampling="balanced"), "train.batch_sampling must be one of uniform, stratified"),
    (
      dict(batch_sampling="stratified", per_condition=6),
      "batch_size = train.conditions_per_batch x train.per_condition, got batch_size=32, "
      "conditions_per_batch=0, per_condition=6 (0 = batch_size / the other, which must divide it)",
    ),
    (
      dict(batch_sampling="stratified", per_condition=8, conditions_per_batch=3),
      "got batch_size=32, conditions_per_batch=3, per_condition=8$",
    ),
    (dict(batch_sampling="stratified", per_condition=0, conditions_per_batch=0), "needs train.per_condition"),
  ]
  for fields, msg in bad:
    with pytest.raises(errors.ConfigError) as e:
      validation.validate(_cfg(**fields))
    assert msg in str(e.value) + "$" and "\n" not in str(e.value), str(e.value)
  local = _cfg(batch_sampling="stratified", per_condition=8)
  local.model.tc_scope = "local"
  validation.validate(local, num_devices=4)
  assert input_pipeline.sampling_options(local)["conditions_per_batch"] == 4
  with pytest.raises(errors.ConfigError, match="multiple of 8"):
    validation.validate(local, num_devices=8)
  local.model.tc_scope = "global"
  validation.validate(local, num_devices=8)  # global scope: any layout
  with pytest.raises(errors.ConfigError, match="exceeds its 5 normal condition"):
    _stratified(_labels(), p=4, k=6)
  with pytest.raises(errors.ConfigError, match="no stratified batch"):
    _stratified(_labels(), p=128, k=4)


def _toy_runs(config, num_classes=9):
  ds = toy_dataset(n_train=720, num_classes=num_classes)
  config.protocol.classes = (0,)
  return ds, protocols.make_runs(config.protocol, ds.num_classes, config.seed)


def _decompose(cond, groups, seed=0):
  rng = np.random.default_rng(seed)
  b, d = cond.size, 4
  out = dict(
    z=rng.normal(size=(b, d)),
    mu=rng.normal(size=(b, d)),
    logvar=np.full((b, d), -1.0),
    prior_mu=np.zeros((b, d)),
    prior_logvar=np.zeros((b, d)),
    cond_ids=cond,
  )
  out = {k: v.astype(np.int32 if k == "cond_ids" else np.float32) for k, v in out.items()}
  return objectives.decompose(
    models.get_model("dcvae"),
    out,
    dataset_size=720.0,
    condition_counts=np.full(8, 80.0, np.float32),
    method="mss",
    groups=groups,
  )


def test_local_shards_hold_whole_groups_on_eight_devices(tmp_path):
  """8 conditions x 4 per batch on 8 devices with tc_scope='local': every device's shard is one whole group of
  one condition, so dcvae's per-device estimates (objectives.decompose with groups = 8) equal those of the
  global batch; a uniform batch's shards split its groups and change them. Training runs on 8 devices."""
  assert jax.device_count() == 8, "tests/conftest.py must set 8 fake CPU devices"
  config = _cfg(batch_sampling="stratified", per_condition=4, conditions_per_batch=8, num_epochs=1)
  config.model.tc_scope = "local"
  ds, runs = _toy_runs(config)
  data = input_pipeline.RunData.build(runs[0], ds.y_train, 32, 1, **input_pipeline.sampling_options(config))
  for s in range(data.steps_per_epoch):
    shards = data.cond_all[data.batch_indices(s, 32)].reshape(8, 4)
    assert np.all(shards == shards[:, :1]) and len(set(shards[:, 0].tolist())) == 8
  cond = data.cond_all[data.batch_indices(0, 32)]
  local, glob = _decompose(cond, 8), _decompose(cond, 1)
  for t in ("mi", "tc", "dwkl"):
    np.testing.assert_allclose(float(local[t]), float(glob[t]), rtol=1e-5, atol=1e-5)
  uniform = input_pipeline.RunData.build(runs[0], ds.y_train, 32, 1)
  cond = uniform.cond_all[uniform.batch_indices(0, 32)]
  assert abs(float(_decompose(cond, 8)["tc"]) - float(_decompose(cond, 1)["tc"])) > 0.05
  state, _, steps = train_toy(config, ds, runs, tmp_path / "local")
  assert steps == data.total_steps == int(state.step[0])


def test_stratified_resume_is_bitwise(tmp_path):
  """Training resumed from a mid-epoch checkpoint ends bitwise where an uninterrupted run ends."""
  config = _cfg(
    batch_sampling="stratified",
    per_condition=8,
    num_epochs=2,
    checkpoint_every_steps=4,
    keep_checkpoints=100,
    steps_per_call=4,
  )
  ds, runs = _toy_runs(config, num_classes=5)
  one = jax.devices()[:1]
  straight, _, total = train_toy(config, ds, runs, tmp_path / "a", mesh=distributed.make_mesh(one))
  steps = sorted(int(s) for s in os.listdir(tmp_path / "a") if s.isdigit())
  spe = input_pipeline.RunData.build(
    runs[0], ds.y_train, 32, 1, **input_pipeline.sampling_options(config)
  ).steps_per_epoch
  cut = [s for s in steps if s % spe and s < total][0]  # a mid-epoch checkpoint
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  for s in steps:
    if s > cut:
      shutil.rmtree(tmp_path / "b" / str(s))
  logged = []
  resumed, _, total_b = train_toy(config, ds, runs, tmp_path / "b", mesh=distributed.make_mesh(one), log=logged.append)
  assert logged == [f"resuming 1 run(s) from step {cut} of {total}"]
  assert total_b == total
  assert_trees_equal(straight, resumed)


def _empirical_group_sizes(d, batch_size, epochs, groups=1):
  """M_i (anchor included) of every anchor in ``epochs`` epochs of RunData ``d``, counted in numpy."""
  out = []
  cond = d.cond_all
  for step in range(d.steps_per_epoch * epochs):
    for shard in np.split(cond[d.batch_indices(step, batch_size)], groups):
      out.append((shard[:, None] == shard[None, :]).sum(1))
  return np.concatenate(out)


@pytest.mark.parametrize("groups", [1, 2])
def test_mean_group_size_uniform_matches_the_sampler(groups):
  """E[M] = 1 + (B' - 1) sum_c N_c (N_c - 1) / (N (N - 1)) against the uniform sampler's own batches."""
  y = _labels()
  d = input_pipeline.RunData.build(RUN, y, 32, 300)
  m = _empirical_group_sizes(d, 32, 300, groups)
  expected = input_pipeline.mean_group_size(d.condition_counts, 32, conditional=True, groups=groups)
  n_c = np.array(SIZES[:5], float)
  b = 32 // groups
  assert expected == pytest.approx(1 + (b - 1) * (n_c * (n_c - 1)).sum() / (n_c.sum() * (n_c.sum() - 1)))
  # ~8,000 batches: the standard error of the mean is below 0.01 (M's std is about 2)
  assert m.mean() == pytest.approx(expected, abs=0.03)


def test_mean_group_size_stratified_unconditional_and_equal_classes():
  d = _stratified(_labels(), p=8, k=4, epochs=2)
  assert set(_empirical_group_sizes(d, 32, 2).tolist()) == {8}
  assert (
    input_pipeline.mean_group_size(d.condition_counts, 32, conditional=True, sampling="stratified", per_condition=8)
    == 8
  )
  assert input_pipeline.mean_group_size(d.condition_counts, 64, conditional=False, groups=8) == 8
  # MNIST leave-one-out: 9 equal conditions, batch 64 -> about 1 + 63 / 9 = 8 (estimator_bias.md's uniform row)
  assert input_pipeline.mean_group_size([6000] * 9, 64, conditional=True) == pytest.approx(8.0, abs=0.01)


def test_estimator_group_size_is_logged_for_decomposed_models():
  from dcvae_jax import experiment

  y = _labels()
  config = _cfg()
  config.model.tc_scope = "global"
  msg = experiment._estimator_group_message(config, models.get_model("dcvae"), RUN, y, num_devices=1)
  b = int(config.train.batch_size)
  expected = input_pipeline.mean_group_size(input_pipeline.condition_counts(RUN, y), b, conditional=True)
  assert f"average over {expected:.1f} examples of the anchor's condition per anchor" in msg
  assert "estimator_bias.md" in msg
  msg = experiment._estimator_group_message(config, models.get_model("beta_tcvae"), RUN, y, num_devices=1)
  assert f"average over {b:.1f} examples per anchor" in msg
  config.model.tc_scope = "local"
  msg = experiment._estimator_group_message(config, models.get_model("beta_tcvae"), RUN, y, num_devices=4)
  assert f"average over {b / 4:.1f} examples per anchor" in msg and "4 device shards" in msg
