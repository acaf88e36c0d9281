"""Bearer keys: read from a file (one per line) or ``BAYESDESIGN_API_KEYS`` (comma-separated),
kept only as SHA-256 hashes, and checked in constant time against every stored hash."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

__all__ = ["ENV_VAR", "load_keys", "KeyRing"]

ENV_VAR = "BAYESDESIGN_API_KEYS"


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def load_keys(keys_file: str | Path | None = None, environ: dict | None = None) -> list[str]:
    """Keys from ``keys_file`` (blank lines and ``#`` comments skipped), else from the environment."""
    if keys_file is not None:
        path = Path(keys_file)
        if not path.is_file():
            raise FileNotFoundError(f"--api-keys-file: {path}: no such file")
        keys = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if not keys:
            raise ValueError(f"--api-keys-file: {path} holds no key (one per line)")
        source = str(path)
    else:
        env = os.environ if environ is None else environ
        keys = [k.strip() for k in env.get(ENV_VAR, "").split(",") if k.strip()]
        source = ENV_VAR
    short = [k for k in keys if len(k) < 16]
    if short:
        raise ValueError(f"{source}: every key must have at least 16 characters ({len(short)} shorter)")
    return keys


class KeyRing:
    """Hashes of the accepted keys; :meth:`accepts` compares a presented key against all of them
    with :func:`hmac.compare_digest` (no early exit, so timing says nothing about which matched)."""

    def __init__(self, keys: list[str]):
        self._hashes = [_hash(k) for k in keys]

    def __len__(self) -> int:
        return len(self._hashes)

    def accepts(self, key: str | None) -> bool:
        if key is None:
            return False
        h = _hash(key)
        ok = False
        for stored in self._hashes:
            ok |= hmac.compare_digest(h, stored)
        return ok
