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


def _own_ticks(pids=()):
  """Jiffies used by this process (all its threads), by its children that have been waited for, and by ``pids``."""
  total = 0
  for pid in ("self", *pids):
    try:
      with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
      continue
    total += sum(int(v) for v in fields[11:15])
  return total


class ForeignLoad:
  """Context manager: the CPU time other processes used while it was open, as a fraction of all cores
  (this process, its finished children and the processes ``pids`` do not count)."""

  def __init__(self, pids=()):
    self.pids = tuple(pids)

  def __enter__(self):
    self.busy0, self.total0 = _cpu_ticks()
    self.own0 = _own_ticks(self.pids)
    return self

  def __exit__(self, *exc):
    busy, total = _cpu_ticks()
    own = _own_ticks(self.pids)
    span = max(total - self.total0, 1)
    self.fraction = max(busy - self.busy0 - (own - self.own0), 0) / span
    return False


def foreign_cpu_fraction(seconds=2.0) -> float:
  with ForeignLoad() as load:
    time.sleep(seconds)
  return load.fraction


def _print(msg):
  print(msg, flush=True)


def wait_for_quiet(threshold=0.1, window=3.0, max_wait=None, log=_print) -> dict:
  """Wait until other processes use < ``threshold`` of the CPUs over ``window`` seconds (at most max_wait
  seconds, default $BENCH_MAX_WAIT or 900), then go on either way (the result says whether it was quiet)."""
  if max_wait is None:
    max_wait = float(os.environ.get("BENCH_MAX_WAIT", 900))
  start = time.time()
  frac = foreign_cpu_fraction(window)
  while frac >= threshold and time.time() - start < max_wait:
    log(f"[benchutil] machine busy: other processes use {frac:.0%} of the CPUs; waiting")
    time.sleep(10)
    frac = foreign_cpu_fraction(window)
  return {"foreign_cpu_fraction_before": frac, "waited_seconds": time.time() - start,
          "quiet": frac < threshold, "load_average_before": os.getloadavg()}


def interleave(fns: dict, reps: int, log=None, pids=(), max_foreign=0.15, max_discards=None) -> dict:
  """Call every fn (a thunk returning a rate) once per repetition, in rotating order; returns
  {name: [rate per rep]}, the foreign CPU fraction of each kept repetition under '_foreign', and the number of
  repetitions thrown away under '_discarded': a repetition during which other processes used more than
  ``max_foreign`` of the CPUs is discarded and repeated after waiting for a quiet machine (at most
  ``max_discards`` times, default 2 * reps; then it is kept and its foreign fraction says so)."""
  names = list(fns)
  out = {n: [] for n in names}
  out["_foreign"], out["_discarded"] = [], 0
  max_discards = 2 * reps if max_discards is None else max_discards
  r = 0
  while r < reps:
    order = names[r % len(names):] + names[:r % len(names)]
    got = {}
    with ForeignLoad(pids) as load:
      for n in order:
        got[n] = float(fns[n]())
    if log:
      log(f"[rep {r}] " + ", ".join(f"{n}={got[n]:.0f}" for n in names) + f", foreign={load.fraction:.0%}")
    if load.fraction > max_foreign and out["_discarded"] < max_discards:
      out["_discarded"] += 1
      if log:
        log(f"[rep {r}] discarded: other processes used {load.fraction:.0%} of the CPUs")
      wait_for_quiet(log=log or (lambda msg: None))
      continue
    for n in names:
      out[n].append(got[n])
    out["_foreign"].append(load.fraction)
    r += 1
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
  if rates and "_discarded" in rates:
    info["discarded_busy_reps"] = rates["_discarded"]
  if rates and rates.get("_foreign"):
    info["foreign_cpu_fraction_per_rep"] = rates["_foreign"]
    info["foreign_cpu_fraction_median"] = float(np.median(rates["_foreign"]))
  return info
