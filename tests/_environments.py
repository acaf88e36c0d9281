"""Small user environments for tests (not scenarios): what a user would write."""

import numpy as np


class TwoCovariates:
    """d = 2 on the unit square, outcomes ``x_0 + N(0, 1)`` in both arms; no truth."""

    d, bounds = 2, (np.zeros(2), np.ones(2))

    def sample_covariates(self, rng, n):
        return rng.uniform(size=(n, 2))

    def sample_outcomes(self, rng, x, arm):
        return x[..., 0] + rng.standard_normal(x.shape[:-1])
