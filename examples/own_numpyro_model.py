"""Bring your own NumPyro model: a prior file with ``model:``, a NUTS teacher, and the teacher as a design.

python examples/own_numpyro_model.py [--quick] [--out DIR]

The model below (linear dose-response mean per arm, log standard deviation linear in the dose)
lives in this very file. The prior file written to DIR names it as ``own_numpyro_model:dose_response``:
Python puts the folder of the script it runs on ``sys.path``, so the module is importable. In your own
project put the model in any importable module (``mypkg/models.py`` -> ``model: "mypkg.models:dose_response"``).
See docs/own_model.md.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist


def dose_response(x, a, y, mask, x_query):
    """The protocol ``model(x, a, y, mask, x_query)`` of docs/own_model.md.

    x (n, 1): dose on the unit interval; a (n,) arms 0/1; y (n,) outcomes or None (prior predictive);
    mask (n,) False on padding; x_query (q, 1). Records ``mean`` and ``sd`` of shape (2, q).
    """
    mask = jnp.asarray(mask, dtype=bool)
    # padded rows may hold anything, NaN included: replace them so neither density nor gradient sees them
    x = jnp.where(mask[:, None], x, 0.5)
    a = jnp.where(mask, a, 0).astype(jnp.int32)
    if y is not None:
        y = jnp.where(mask, y, 0.0)

    # per arm (index 0 = control, 1 = treated): mean = b0 + b1 u, log sd = g0 + g1 u
    b0 = numpyro.sample("b0", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    b1 = numpyro.sample("b1", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    g0 = numpyro.sample("g0", dist.Normal(0.0, 0.7).expand([2]).to_event(1))
    g1 = numpyro.sample("g1", dist.Normal(0.0, 0.7).expand([2]).to_event(1))

    u = x[:, 0]
    with numpyro.plate("units", a.shape[0]), numpyro.handlers.mask(mask=mask):
        numpyro.sample("y", dist.Normal(b0[a] + b1[a] * u, jnp.exp(g0[a] + g1[a] * u)), obs=y)

    q = x_query[:, 0]
    numpyro.deterministic("mean", b0[:, None] + b1[:, None] * q[None, :])  # (2, q)
    numpyro.deterministic("sd", jnp.exp(g0[:, None] + g1[:, None] * q[None, :]))  # (2, q)


PRIOR = """\
name: dose-response
description: Linear dose-response per arm with log-linear noise; a user NumPyro model.
covariates:
  - {name: dose, low: 0, high: 10}
model: "own_numpyro_model:dose_response"
"""


class DoseTrial:
    """The truth the example experiments on (dose in mg on [0, 10]); the treated arm gets noisier with dose."""

    d = 1
    bounds = (np.array([0.0]), np.array([10.0]))

    def sample_covariates(self, rng, n):
        return rng.uniform(0.0, 10.0, size=(n, 1))

    def mean(self, x, arm):
        return np.where(np.asarray(arm) == 1, 1.0 + 0.3 * x[..., 0], 0.5 + 0.1 * x[..., 0])

    def sd(self, x, arm):
        return np.where(np.asarray(arm) == 1, np.exp(-0.5 + 0.15 * x[..., 0]), np.exp(0.3 - 0.05 * x[..., 0]))

    def sample_outcomes(self, rng, x, arm):
        return self.mean(x, arm) + self.sd(x, arm) * rng.standard_normal(x.shape[:-1])

    ate = 0.5 + 0.2 * 5.0  # E[mu_1 - mu_0] over dose ~ U[0, 10]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI)")
    ap.add_argument("--out", default=None, help="folder for the prior file and the pilot (default: a temporary folder)")
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="own-model-"))
    out.mkdir(parents=True, exist_ok=True)

    import arviz as az
    import pandas as pd

    import bayesdesign as bd
    from bayesdesign.spec import load_prior
    from bayesdesign.teachers.nuts import NUTSTeacher

    started = time.time()
    prior_file = out / "dose-response.yaml"
    prior_file.write_text(PRIOR)
    spec = load_prior(prior_file)  # the model module is imported only when a teacher needs it
    print(f"prior {spec.name!r} ({prior_file}): user model {spec.model}, covariate box {spec.bounds}")

    # 1. a pilot: units randomized by a fair coin on the true dose-response
    env, rng = DoseTrial(), np.random.default_rng(0)
    n = 120 if args.quick else 400
    x = env.sample_covariates(rng, n)
    a = (rng.uniform(size=n) < 0.5).astype(float)
    y = env.sample_outcomes(rng, x, a)
    history = bd.History(x, a, y, np.full(n, 0.5))
    pd.DataFrame({"dose": x[:, 0], "a": a.astype(int), "y": y}).to_csv(out / "pilot.csv", index=False)

    # 2. the NUTS teacher conditions the user's model on the pilot. Quick mode pads every fit to 128
    # units and uses the same settings for cold and warm fits, so that the design below reuses the
    # one compiled sampler (compilation, not sampling, is most of the time at this size).
    if args.quick:
        settings = dict(num_warmup=150, num_samples=150, warm_warmup=150, max_units=128)
    else:
        settings = dict(num_warmup=500, num_samples=1000)
    teacher = NUTSTeacher(spec, seed=0, **settings)
    doses = np.array([[0.0], [2.5], [5.0], [7.5], [10.0]])
    idata = teacher.posterior(history, doses, draws=settings["num_samples"])
    print(f"\nposterior after a pilot of {n} units (NUTS, {settings['num_samples']} draws): sd[arm, dose]")
    summary = az.summary(idata, var_names=["sd"], kind="stats", round_to=3)
    true_sd = np.stack([env.sd(doses, 0), env.sd(doses, 1)])
    summary["true"] = true_sd.ravel().round(3)  # rows sd[arm, query], arm 0 (control) first
    print(summary.to_string())
    sbar = idata.posterior["sd"].mean(("chain", "draw")).values  # (2, q): E[sigma_a(x) | H]
    print("\ndose                      " + "  ".join(f"{v:6.1f}" for v in doses[:, 0]))
    print("posterior Neyman pi_T     " + "  ".join(f"{v:6.3f}" for v in sbar[1] / (sbar[1] + sbar[0])))
    print("true Neyman pi*           " + "  ".join(f"{v:6.3f}" for v in true_sd[1] / (true_sd[1] + true_sd[0])))
    print(f"divergent transitions: {int(idata.sample_stats['diverging'].sum())}")

    # 3. the same teacher as a design next to complete randomization (common random numbers)
    horizon, reps = (120, 1) if args.quick else (1000, 40)
    design = NUTSTeacher(spec, refit_every=40 if args.quick else 200, seed=0, **settings)
    design.name = "teacher:nuts:dose-response"
    ds = bd.simulate(env, ["uniform", design], horizon=horizon, reps=reps, seed=1, batch_size=5)
    table = bd.summary.summarize(ds)
    title = f"\nas a design on the dose trial: T = {horizon}, {reps} replication(s)"
    if args.quick:  # one replication: only the allocation figures mean something
        table = table[["design_var_ratio", "mean_abs_pi_error"]]
    print(bd.summary.format_table(table, title))
    print(f"\ndone in {time.time() - started:.0f} s; prior file and pilot.csv in {out}")


if __name__ == "__main__":
    sys.exit(main())
