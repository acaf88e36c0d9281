r"""Chunked work on one process or on Ray: trace generation and SBC split into independent chunks.

Every chunk carries its own seed (the caller's ``(seed, chunk index)``), so results do not depend
on how many workers ran them or in which order. :func:`map_chunks` runs ``fn(*args)`` for each
chunk and returns the results in chunk order:

- **one worker** (``workers=1`` and no ``address``): in this process, one chunk after another;
- **a local Ray instance** (``workers=N > 1``): started for the run with ``N`` CPUs on
  127.0.0.1, the dashboard off, and shut down when the run ends (also on an error or Ctrl-C);
  each chunk is a Ray task asking for one CPU;
- **an existing Ray cluster** (``address="ray://host:10001"``, ``"host:6379"`` or ``"auto"``):
  joined, not started, and left running; every node must have the package (and a user model's
  module) importable, see ``docs/traces.md``.

Ray starts its worker processes itself (``raylet`` executes a fresh Python interpreter), not by
``fork`` of the driver, so JAX, which may deadlock in a child forked after its thread pools
started, is imported fresh in every worker. For a local instance the driver's ``sys.path`` is
handed to the workers through ``PYTHONPATH``, so they import the same ``bayesdesign`` (and user
model modules) as the driver. One ``tqdm`` bar counts finished chunks (weighted by ``sizes``) over
all workers. Resumption is the caller's: chunks whose output exists are not submitted.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm

__all__ = ["map_chunks", "ray_session"]


def _check_workers(workers: int, address: str | None) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
    if address is not None and not str(address).strip():
        raise ValueError("ray_address: expected a Ray address such as 'auto' or 'ray://host:10001', got ''")


def _import_ray():
    try:
        import ray
    except ImportError as err:  # pragma: no cover - ray ships with the 'distributed' extra
        raise ValueError(
            "workers: more than one worker (or --ray-address) needs Ray: pip install 'bayesdesign[distributed]'"
        ) from err
    return ray


@contextmanager
def ray_session(workers: int, address: str | None = None):
    """Connect to Ray for one run: start a local instance with ``workers`` CPUs (shut down on
    exit), or join the cluster at ``address`` (left running; ``ray.shutdown`` only disconnects)."""
    ray = _import_ray()
    if ray.is_initialized():  # the caller (a test, a notebook) manages Ray itself
        yield ray
        return
    if address is not None:
        ray.init(address=address, log_to_driver=False)
    else:
        quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(paths)  # inherited by the raylet and its workers
        # Ray starts workers at nice 15: on a busy machine any other process would starve the run
        old_nice = os.environ.get("RAY_worker_niceness")
        os.environ["RAY_worker_niceness"] = "0"
        try:
            with warnings.catch_warnings():
                # subprocess.Popen forks and at once execs Ray's binaries: no JAX code runs in the child
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
                ray.init(num_cpus=workers, _node_ip_address="127.0.0.1", **quiet)
        finally:
            for key, value in (("PYTHONPATH", old), ("RAY_worker_niceness", old_nice)):
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    try:
        yield ray
    finally:
        ray.shutdown()


def map_chunks(
    fn: Callable[..., Any],
    chunks: Sequence[tuple],
    *,
    workers: int = 1,
    address: str | None = None,
    sizes: Sequence[int] | None = None,
    progress: bool = False,
    desc: str = "chunks",
    unit: str = "chunk",
    initial: int = 0,
    total: int | None = None,
) -> list:
    """``[fn(*args) for args in chunks]``, in this process or as Ray tasks (see the module notes).

    ``fn`` must be a module-level function (Ray imports it by name in the workers) and its
    arguments and result picklable. ``sizes`` weights each chunk on the progress bar (default 1);
    ``initial`` and ``total`` set the bar's start and end (chunks done before a resumed run).
    """
    _check_workers(workers, address)
    sizes = [1] * len(chunks) if sizes is None else list(sizes)
    total = initial + sum(sizes) if total is None else total
    bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not progress)
    try:
        if workers == 1 and address is None:
            out = []
            for args, size in zip(chunks, sizes, strict=True):
                out.append(fn(*args))
                bar.update(size)
            return out
        if not chunks:
            return []
        with ray_session(workers, address) as ray:
            remote = ray.remote(num_cpus=1, max_retries=0)(fn)
            refs = [remote.remote(*args) for args in chunks]
            index = {ref: i for i, ref in enumerate(refs)}
            results: list = [None] * len(refs)
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                i = index[done[0]]
                results[i] = ray.get(done[0])
                bar.update(sizes[i])
            return results
    finally:
        bar.close()
