"""JAX's persistent compilation cache, on by default for bayesdesign's programs.

Every process that runs a teacher compiles the same XLA programs: about 2 s for the closed-form
teachers' decision and about 48 CPU-s for a NUTS teacher's fits (docs/teachers_sampling.md), paid
again by every command, every resumed ``traces`` run and every Ray worker. JAX can keep compiled
programs on disk; :func:`configure` (run when ``bayesdesign`` is imported) points it at
``$XDG_CACHE_HOME/bayesdesign/jax`` (``~/.cache/bayesdesign/jax``) through JAX's own environment
variables, which Ray workers and other subprocesses inherit:

- ``JAX_COMPILATION_CACHE_DIR``: set it yourself to use another folder, or to the empty string
  to turn the cache off; bayesdesign only fills it in when it is unset;
- ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``: programs that compiled faster are not stored
  (0.2 s unless set).

A cached program is the program XLA compiles, so results are unchanged (the traces of 1 and 2
workers stay identical, tested).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["configure", "default_dir"]


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/bayesdesign/jax``, or ``~/.cache/bayesdesign/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bayesdesign" / "jax"


def configure() -> str | None:
    """Fill in JAX's cache variables where unset (a folder that cannot be created leaves the cache
    off); if JAX is already imported, set its configuration to match. Returns the folder in use."""
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        path = default_dir()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(path)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    folder = os.environ["JAX_COMPILATION_CACHE_DIR"] or None
    jax = sys.modules.get("jax")
    if jax is not None and folder and not jax.config.jax_compilation_cache_dir:
        seconds = float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", seconds)
    return folder
