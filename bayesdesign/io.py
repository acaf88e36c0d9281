"""Atomic writes: a file appears complete or not at all, and what was there is kept on failure."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import xarray as xr

__all__ = ["atomic_path", "save_dataset", "load_dataset", "write_text"]


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_dataset(ds: xr.Dataset, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``ds`` to netCDF (h5netcdf engine, gzip) atomically."""
    enc = {v: {"compression": "gzip", "compression_opts": 4} for v in ds.data_vars} if compress else None
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf", encoding=enc)
    return Path(path)


def load_dataset(path: str | os.PathLike) -> xr.Dataset:
    """Read a netCDF file fully into memory (the file is closed afterwards)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)
