"""The one cosine basis (bayesdesign.basis) against closed forms, in each array library that uses
it, and the compiled engine's own kernel against it; no two modules of the package import each
other."""

import ast
import itertools
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bayesdesign.basis import SQRT2, cosine_features, cosine_terms
from bayesdesign.student.engine import _basis
from bayesdesign.student.model import fourier


def test_hand_computed_features():
    # u = (0, 1/2), J = 2: [1, sqrt2 cos 0, sqrt2 cos 0, sqrt2 cos(pi/2), sqrt2 cos(pi)]
    want = [1.0, SQRT2, SQRT2, 0.0, -SQRT2]
    np.testing.assert_allclose(cosine_features(np.array([[0.0, 0.5]]), 2), [want], atol=1e-15)
    np.testing.assert_allclose(cosine_terms(np.array([0.25]), 1, scale=2.0), [2 * np.cos(np.pi / 4)])


def test_orthonormal_under_the_uniform_measure():
    nodes, weights = np.polynomial.legendre.leggauss(40)
    u, w = (nodes + 1) / 2, weights / 2  # Gauss-Legendre on [0, 1]
    phi = cosine_features(u[:, None], 8)
    np.testing.assert_allclose(phi.T @ (w[:, None] * phi), np.eye(9), atol=1e-12)


@pytest.mark.parametrize("scale", [SQRT2, 1.0, 2.0])
def test_every_array_library_and_the_engine_kernel_agree(scale):
    u = np.random.default_rng(0).uniform(size=(3, 5, 2))
    ref = cosine_features(u, 6, scale=scale)
    t = cosine_features(torch.as_tensor(u), 6, scale=scale)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    np.testing.assert_allclose(t.numpy(), ref, rtol=1e-14)
    j = cosine_features(jnp.asarray(u, jnp.float32), 6, scale=scale)
    assert isinstance(j, jnp.ndarray) and j.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(j), ref, atol=1e-5)
    out = np.empty(1 + 2 * 6)
    for row in u.reshape(-1, 2):
        _basis(row, 6, scale, out)
        np.testing.assert_allclose(out, cosine_features(row, 6, scale=scale), rtol=1e-12, atol=1e-15)


def test_the_students_fourier_features():
    u = torch.tensor([[0.0, 0.5]], dtype=torch.float64)
    np.testing.assert_allclose(fourier(u, 2).numpy(), [[0.0, 0.5, 1.0, 1.0, 0.0, -1.0]], atol=1e-15)


def test_no_two_modules_import_each_other():
    root = Path(__file__).resolve().parent.parent / "bayesdesign"
    mods = {}
    for p in root.rglob("*.py"):
        name = ".".join(p.relative_to(root.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    deps = {}
    for name, p in mods.items():
        pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(p.read_text())):  # lazy imports inside functions included
            if isinstance(node, ast.ImportFrom):
                base = pkg
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                full = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                found |= {f"{full}.{a.name}" if f"{full}.{a.name}" in mods else full for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        deps[name] = found & set(mods) - {name}
    cycles = [(a, b) for a, b in itertools.combinations(sorted(mods), 2) if b in deps[a] and a in deps[b]]
    assert not cycles


def test_every_to_unit_is_the_basis_one():
    """basis.to_unit is the reference: the prior's, the student's scaling (float32) and the
    engine's compiled copy (tested against the scaling in test_student_engine.py) agree with it."""
    from bayesdesign.basis import to_unit
    from bayesdesign.spec import load_prior
    from bayesdesign.student.scaling import InputScaling

    spec = load_prior("beta1")
    x = np.array([[-0.5], [0.0], [0.3], [1.0], [7.0]])
    np.testing.assert_array_equal(to_unit(x, [0.0], [1.0])[:, 0], [0.0, 0.0, 0.3, 1.0, 1.0])
    np.testing.assert_array_equal(spec.to_unit(x), to_unit(x, *spec.bounds))
    sc = InputScaling.from_spec(spec, bounds=([-1.0], [3.0]))
    np.testing.assert_array_equal(sc.to_unit(x), to_unit(x, [-1.0], [3.0]).astype(np.float32))
