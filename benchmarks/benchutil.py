"""Helpers for noisy shared machines: wait for a quiet CPU, measure other processes' CPU use while timing,
and interleave A/B measurements (medians of per-repetition ratios)."""

from __future__ import annotations

import os
import time

import numpy as np

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_ticks():
  """(busy, total) jiffies of the whole machine since boot."""
  with open("/proc/stat") as f:
    vals = [int(v) for v in f.readline().split()[1:]]
  idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
  return sum(vals) - idle, sum(vals)


def _own_ticks():
  """Jiffies used by this process (all its threads)."""
  with open("/proc/self/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
  return int(fields[11]) + int(fields[12])


class ForeignLoad:
  """Context manager: the CPU time other processes used while it was open, as a fraction of all cores."""

  def __enter__(self):
    self.busy0, self.total0 = _cpu_ticks()
    self.own0 = _own_ticks()
    return self

  def __exit__(self, *exc):
    busy, total = _cpu_ticks()
    own = _own_ticks()
    span = max(total - self.total0, 1)
    self.fraction = max(busy - self.busy0 - (own - self.own0), 0) / span
    return False


def foreign_cpu_fraction(seconds=2.0) -> float:
  with ForeignLoad() as load:
    time.sleep(seconds)
  return load.fraction


def wait_for_quiet(threshold=0.1, window=3.0, max_wait=900.0, log=print) -> dict:
  """Wait until other processes use < ``threshold`` of the CPUs over ``window`` seconds (at most max_wait)."""
  start = time.time()
  frac = foreign_cpu_fraction(window)
  while frac >= threshold and time.time() - start < max_wait:
    log(f"[benchutil] machine busy: other processes use {frac:.0%} of the CPUs; waiting")
    time.sleep(10)
    frac = foreign_cpu_fraction(window)
  return {"foreign_cpu_fraction_before": frac, "waited_seconds": time.time() - start,
          "quiet": frac < threshold, "load_average_before": os.getloadavg()}


def interleave(fns: dict, reps: int, log=None) -> dict:
  """Call every fn (a thunk returning a rate) once per repetition, in rotating order; returns
  {name: [rate per rep]} plus the foreign CPU fraction of each repetition under '_foreign'."""
  names = list(fns)
  out = {n: [] for n in names}
  out["_foreign"] = []
  for r in range(reps):
    order = names[r % len(names):] + names[:r % len(names)]
    with ForeignLoad() as load:
      for n in order:
        out[n].append(float(fns[n]()))
    out["_foreign"].append(load.fraction)
    if log:
      log(f"[rep {r}] " + ", ".join(f"{n}={out[n][-1]:.0f}" for n in names) + f", foreign={load.fraction:.0%}")
  return out


def median_ratio(a, b) -> float:
  """Median over repetitions of a[r] / b[r] (paired within a repetition)."""
  return float(np.median(np.asarray(a) / np.asarray(b)))


def summary(rates: dict) -> dict:
  return {n: {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v)), "reps": v}
          for n, v in rates.items() if not n.startswith("_")}


def load_info(rates: dict | None = None, quiet: dict | None = None) -> dict:
  info = {"load_average_after": os.getloadavg()}
  if quiet:
    info.update(quiet)
  if rates and rates.get("_foreign"):
    info["foreign_cpu_fraction_per_rep"] = rates["_foreign"]
    info["foreign_cpu_fraction_median"] = float(np.median(rates["_foreign"]))
  return info
