"""JAX's persistent compilation cache (``bayesdesign.jax_cache``): the default folder, a user's own
setting kept, the empty string turning it off, and the teachers' programs actually stored."""

import os
import subprocess
import sys

from bayesdesign.jax_cache import configure


def test_default_folder_under_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = configure()
    assert folder == str(tmp_path / "bayesdesign" / "jax") == os.environ["JAX_COMPILATION_CACHE_DIR"]
    assert (tmp_path / "bayesdesign" / "jax").is_dir()


def test_a_users_setting_is_kept_and_empty_turns_it_off(monkeypatch, tmp_path):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert configure() == str(tmp_path / "mine")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "")
    assert configure() is None and os.environ["JAX_COMPILATION_CACHE_DIR"] == ""


def test_teacher_programs_are_stored(tmp_path):
    """A closed-form teacher's decision in a fresh process leaves compiled programs in the folder."""
    code = (
        "import numpy as np, bayesdesign as bd\n"
        "from bayesdesign.teachers import make_teacher\n"
        "t = make_teacher('mixture', 'unit-free')\n"
        "x = np.random.default_rng(0).uniform(size=(1, 40, 1)); a = (x[..., 0] > 0.5).astype(float)\n"
        "t.decide(t.update(t.init(1), x, a, x[..., 0] + a, None), x[:, :2])\n"
    )
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax")}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    assert any((tmp_path / "jax").iterdir())
