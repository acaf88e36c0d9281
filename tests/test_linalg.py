import numpy as np

from bayesdesign import linalg


def test_unrolled_cholesky_and_solves_match_numpy(rng):
    a = rng.standard_normal((3, 2, 7, 7))
    spd = np.eye(7) + a @ np.swapaxes(a, -1, -2)
    b = rng.standard_normal((3, 2, 7, 4))
    chol = np.asarray(linalg.cholesky(spd.astype(np.float32)), float)
    np.testing.assert_allclose(chol, np.linalg.cholesky(spd), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(np.asarray(linalg.cho_solve(chol, b)), np.linalg.solve(spd, b), rtol=2e-3, atol=2e-4)
    lower = np.asarray(linalg.solve_lower(chol, b))
    np.testing.assert_allclose(np.tril(chol) @ lower, b, atol=1e-4)
