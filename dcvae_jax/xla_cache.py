"""A persistent XLA compilation cache: a second run of a job (or of the tests) loads its compiled programs from
disk instead of compiling them again (on 2 CPU cores the main job compiles for ~20 s: benchmarks/README.md).

:func:`enable` (called by ``dcvae_jax.main`` and the tests' conftest, before anything compiles) sets JAX's
``jax_compilation_cache_dir`` to

  $DCVAE_XLA_CACHE             when set: a directory; "0", "off", "false", "no" or "" turn the cache off
  $XDG_CACHE_HOME/dcvae_jax/xla  otherwise (~/.cache/dcvae_jax/xla)

unless JAX already has a cache directory (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``), which it keeps.
Every program is written, however quickly it compiled (``MIN_COMPILE_SECONDS``): JAX's own threshold, 1 s,
leaves out the dozens of small programs a job compiles (parameter initialisation, random keys, stacking), which
on a busy 2-core machine add up to ~3 s of the smoke job; all of them together take about 1 MB.

Safety. An entry's key is a hash of the program, its compile options, the devices and the JAX / XLA versions, so
an entry is only ever loaded for the very same program (the results are bitwise those of a fresh compilation;
benchmarks/main_job.py checks it on the main job). JAX writes entries from process 0 only; this module makes each
write atomic (a temporary file in the same folder, then ``os.replace``), so jobs sharing the folder on one
machine, or a job killed while writing, never leave or read half an entry (an empty entry, left by a JAX that
wrote in place, reads as a miss and is written again). A damaged entry is a warning and a recompilation, never
a wrong program. The folder holds code that is run: do not share it with users you do not trust. It grows with
every new program (the main job's: ~1 MB); delete it at any time.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

ENV = "DCVAE_XLA_CACHE"
OFF = ("0", "off", "false", "no", "")
MIN_COMPILE_SECONDS = 0.0


def default_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "dcvae_jax", "xla")


def requested_dir() -> str | None:
  """The cache folder the environment asks for (None: the cache is off)."""
  value = os.environ.get(ENV)
  if value is None:
    return default_dir()
  return None if value.strip().lower() in OFF else os.path.expanduser(value)


def enable() -> str | None:
  """Point JAX's persistent compilation cache at :func:`requested_dir` (see the module docstring); returns the
  folder in use, or None when the cache is off. Call it before the first compilation."""
  import jax

  if os.environ.get(ENV) is not None and requested_dir() is None:  # asked off: off, whatever JAX was told
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  # jax.config creates its flags' attributes at run time, so its type stub does not know them.
  path = jax.config.jax_compilation_cache_dir or requested_dir()  # type: ignore[attr-defined]
  if path is None:
    return None
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:  # an unwritable home: run without the cache rather than fail
    return None
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size floor (-1: none, not overridable)
  _atomic_writes()
  return path


def _atomic_writes() -> None:
  """Make the file cache JAX builds write each entry atomically. Relies on JAX internals
  (``jax._src.compilation_cache.get_file_cache`` and its ``LRUCache``); where they differ, JAX's own writes
  stay (safe from wrong programs, not from a warning about a half-written entry)."""
  try:
    from jax._src import compilation_cache, lru_cache
  except ImportError:
    return
  build = getattr(compilation_cache, "get_file_cache", None)
  if build is None or getattr(build, "_dcvae_atomic", False):
    return
  suffix = getattr(lru_cache, "_CACHE_SUFFIX", "-cache")

  def get_file_cache(path):
    built = build(path)
    cache = built[0] if isinstance(built, tuple) else None
    # Only JAX's plain, unbounded file cache (a bounded one locks and evicts: leave it alone).
    if type(cache) is lru_cache.LRUCache and not getattr(cache, "eviction_enabled", True):
      folder = str(cache.path)
      plain_get = cache.get
      cache.put = lambda key, value: _put_atomic(folder, f"{key}{suffix}", value)
      cache.get = lambda key: plain_get(key) or None  # an empty entry is a miss
    return built

  get_file_cache.__dict__["_dcvae_atomic"] = True  # marks the wrapper: installed once
  compilation_cache.get_file_cache = get_file_cache


def _put_atomic(folder: str, name: str, value: bytes) -> None:
  target = os.path.join(folder, name)
  if os.path.exists(target) and os.path.getsize(target) > 0:  # (an empty one is replaced)
    return
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(value)
    os.replace(tmp, target)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
