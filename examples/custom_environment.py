"""Plug a user's own environment and policy into the runner, then analyse a logged trial.

python examples/custom_environment.py [--quick]
"""

import sys

import numpy as np
import pandas as pd

import bayesdesign as bd


class Churn:
    """Monthly spend of customers by tenure (years) and plan (0/1); treatment: a retention offer."""

    d = 2
    bounds = (np.array([0.0, 0.0]), np.array([10.0, 1.0]))
    ate = 4.0

    def sample_covariates(self, rng, n):
        return np.column_stack([rng.uniform(0, 10, n), rng.integers(0, 2, n)])

    def mean(self, x, arm):
        return 50 + 2 * x[:, 0] + 10 * x[:, 1] + 4 * np.asarray(arm)

    def sd(self, x, arm):
        return np.where(np.asarray(arm) == 1, 5 + 2 * x[:, 0], 8 - 0.5 * x[:, 0])

    def sample_outcomes(self, rng, x, arm):
        return self.mean(x, arm) + self.sd(x, arm) * rng.standard_normal(len(x))


class Thompsonish:
    """A user's policy with only the protocol method: lean to the noisier arm seen so far."""

    name = "noisier-arm"

    def propensity(self, history, x):
        if len(history) < 20:
            return np.full(len(x), 0.5)
        s1 = history.y[history.a == 1].std() if (history.a == 1).sum() > 1 else 1.0
        s0 = history.y[history.a == 0].std() if (history.a == 0).sum() > 1 else 1.0
        return np.full(len(x), np.clip(s1 / (s1 + s0), 0.1, 0.9))


quick = "--quick" in sys.argv
horizon, reps = (200, 5) if quick else (1000, 100)
ds = bd.simulate(Churn(), ["uniform", "plugin-neyman", Thompsonish()], horizon, reps, seed=1)
print(bd.summary.format_table(bd.summary.summarize(ds), "user environment"))

# the log of one experiment, as a team would have it after the trial, analysed from the table
rep = ds.sel(design="plugin-neyman", unit_rep=0)
log = pd.DataFrame({"tenure": rep.x[:, 0], "plan": rep.x[:, 1], "a": rep.a, "y": rep.y, "pi": rep.pi})
res = bd.analyze(log)
print(f"\nanalysed log: ATE {res['ate']:.2f} (se {res['se']:.2f}), 95% CI [{res['lower']:.2f}, {res['upper']:.2f}]")
