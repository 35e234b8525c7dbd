"""Anomaly-detection protocols (docs/design.md "Protocols"): which classes are normal, which
anomalous, for each run, and the condition id of an image in a run.

one_vs_rest:   normal = {k}, anomalous = all others; one run per k (reported under class k).
leave_one_out: normal = all classes but k, anomalous = {k}; one run per k (reported under class k).
split:         explicit ``protocol.normal`` / ``protocol.anomalous`` lists; one run (reported as "split").
folder:        the data's own classes (``Dataset.protocol_classes`` of ``data.name=folder``: normal = the train
               classes, anomalous = test/anomalous/, possibly none); one run (reported as "folder"). A dataset
               that fixes its protocol this way gets it whatever ``protocol.name`` says.
ood:           cross-dataset: normal = every class of data.name, anomalous = the test images of
               ``protocol.ood_dataset``, which ``splits.add_ood`` labels ``num_classes - 1`` of the combined
               dataset; one run (reported as "ood").
Every run is repeated for seeds ``seed .. seed + num_seeds - 1``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dcvae_jax.errors import ProtocolError
from dcvae_jax.options import PROTOCOLS  # noqa: F401 (re-exported)
from dcvae_jax.validation import check_protocol_name


@dataclasses.dataclass(frozen=True)
class Run:
  name: str  # e.g. "class3_seed0"
  label: str  # the key under which results are reported ("3" or "split")
  seed: int
  normal: tuple[int, ...]  # training classes; condition id = position in this tuple
  anomalous: tuple[int, ...]
  uid: int  # stable integer naming this run's random stream (fold_in(seed key, uid))


def make_runs(protocol, num_classes: int, seed: int, num_seeds: int = 1, *, fixed: tuple | None = None) -> list[Run]:
  """The runs of ``protocol``; ``fixed``: (normal, anomalous) classes of a dataset that defines its own protocol
  (``Dataset.protocol_classes``), which then replaces ``protocol.name`` by "folder"."""
  name = "folder" if fixed is not None else protocol.name
  check_protocol_name(name)
  all_classes = tuple(range(num_classes))

  def check(classes, what):
    bad = [k for k in classes if not 0 <= int(k) < num_classes]
    if bad:
      raise ProtocolError(f"{what} {bad} out of range: this dataset has classes 0..{num_classes - 1}")
    return tuple(int(k) for k in classes)

  cells = []  # (label, normal, anomalous, uid)
  if name == "folder":
    if fixed is None:
      raise ProtocolError(
        "protocol 'folder' needs data.name=folder (its train/ and test/anomalous/ folders define the classes)"
      )
    normal, anomalous = check(fixed[0], "normal classes"), check(fixed[1], "anomalous classes")
    if not normal:
      raise ProtocolError("protocol 'folder' needs at least one normal class")
    cells.append(("folder", normal, anomalous, 0))
  elif name == "split":
    normal, anomalous = check(protocol.normal, "protocol.normal"), check(protocol.anomalous, "protocol.anomalous")
    if not normal or not anomalous:
      raise ProtocolError("protocol 'split' needs non-empty protocol.normal and protocol.anomalous class lists")
    if set(normal) & set(anomalous):
      raise ProtocolError(f"classes {sorted(set(normal) & set(anomalous))} are both normal and anomalous")
    cells.append(("split", tuple(sorted(normal)), tuple(sorted(anomalous)), 0))
  elif name == "ood":
    if num_classes < 2:
      raise ProtocolError("protocol 'ood' needs the in-distribution classes and the ood class (splits.add_ood)")
    cells.append(("ood", all_classes[:-1], all_classes[-1:], 0))
  else:
    chosen = check(protocol.classes, "protocol.classes") or all_classes
    if num_classes < 2:
      raise ProtocolError(f"protocol {name!r} needs at least 2 classes, the dataset has {num_classes}")
    for k in dict.fromkeys(chosen):
      rest = tuple(j for j in all_classes if j != k)
      normal, anomalous = ((k,), rest) if name == "one_vs_rest" else (rest, (k,))
      cells.append((str(k), normal, anomalous, k))
  runs = []
  for s in range(seed, seed + max(int(num_seeds), 1)):
    for label, normal, anomalous, uid in cells:
      runs.append(
        Run(
          name=f"{label}_seed{s}" if label in ("split", "folder", "ood") else f"class{label}_seed{s}",
          label=label,
          seed=s,
          normal=normal,
          anomalous=anomalous,
          uid=uid,
        )
      )
  return runs


def condition_ids(run: Run, y, missing: int) -> np.ndarray:
  """int32 (N,): the condition id of each label in ``y`` for ``run``, i.e. its position in ``run.normal``, and
  ``missing`` for a class that is not a normal class of the run."""
  y = np.asarray(y)
  lookup = np.full(int(max(y.max(initial=0), *run.normal)) + 1, missing, np.int32)
  lookup[list(run.normal)] = np.arange(len(run.normal), dtype=np.int32)
  return lookup[y]
