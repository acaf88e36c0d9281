"""The shipped example user model (revenue per visitor): its moments against Monte Carlo of its own
likelihood, and its prior file through simulate and traces."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from bayesdesign.cli import main
from bayesdesign.examples_models import REVENUE_PRIOR
from bayesdesign.io import load_dataset
from bayesdesign.models import sample_tasks
from bayesdesign.spec import load_prior


def test_revenue_tasks_moments_match_their_outcomes():
    spec = load_prior(REVENUE_PRIOR)
    assert spec.d == 2 and spec.model == "bayesdesign.examples_models.revenue:revenue"
    env, _ = sample_tasks(spec, np.random.default_rng(0), 6)
    x = np.broadcast_to(np.array([0.3, 0.8]), (6, 20_000, 2))
    for arm in (0, 1):
        y = env.sample_outcomes(np.random.default_rng(arm), x, arm)
        mu, sd = env.mean(x[:, :1], arm)[:, 0], env.sd(x[:, :1], arm)[:, 0]
        assert np.all(y >= 0) and 0.05 < (y == 0).mean() < 0.99  # zero-inflated, non-negative
        z = (y.mean(1) - mu) / (sd / np.sqrt(20_000))
        assert np.all(np.abs(z) < 5), z
        # the sample sd of a lognormal mixture converges slowly: a loose check
        np.testing.assert_allclose(np.median(y.std(1) / sd), 1.0, atol=0.15)


def test_revenue_moments_are_finite_for_extreme_draws():
    """The moments in log space: equal to the direct formulas where those are finite (float64), and
    finite where ``p e^(2m + 2s^2) - mu^2`` overflows float32 to ``inf - inf`` (a wild posterior
    draw of the NUTS teacher gave a NaN probability that way)."""
    import jax.numpy as jnp

    from bayesdesign.examples_models.revenue import moments

    rng = np.random.default_rng(0)
    logits, loc, scale = rng.normal(-1, 2, 500), rng.normal(0, 1, 500), np.exp(rng.normal(-0.5, 0.5, 500))
    p = 1 / (1 + np.exp(-logits))
    mean = p * np.exp(loc + scale**2 / 2)
    sd = np.sqrt(p * np.exp(2 * loc + 2 * scale**2) - mean**2)
    got = [np.asarray(v, float) for v in moments(jnp.asarray(logits), jnp.asarray(loc), jnp.asarray(scale))]
    np.testing.assert_allclose(got[0], mean, rtol=1e-5)
    np.testing.assert_allclose(got[1], sd, rtol=1e-5)
    wild = moments(jnp.float32(2.0), jnp.float32(30.0), jnp.float32(7.0))
    assert all(np.isfinite(np.asarray(v)) and np.asarray(v) > 1e20 for v in wild)


def test_revenue_prior_runs_through_simulate():
    res = CliRunner().invoke(main, ["simulate", "--prior", str(REVENUE_PRIOR), "--designs", "uniform,plugin-neyman",
                                    "-T", "100", "-R", "4", "--json"])
    assert res.exit_code == 0, res.output
    table = json.loads(res.output)
    assert set(table) >= {"uniform", "plugin-neyman", "oracle"}
    # the arms' sds differ enough that Neyman allocation pays: uniform well above the oracle
    assert table["uniform"]["design_var_ratio"] > table["oracle"]["design_var_ratio"] + 0.1


@pytest.mark.slow
def test_revenue_prior_runs_through_nuts_traces(tmp_path):
    out = tmp_path / "rev.nc"
    res = CliRunner().invoke(main, ["traces", "--prior", str(REVENUE_PRIOR), "--teacher", "nuts", "-N", "2", "-T",
                                    "40", "-Q", "3", "--refit-every", "20", "-o", "num_warmup=60", "-o",
                                    "num_samples=40", "--out", str(out)])
    assert res.exit_code == 0, res.output
    ds = load_dataset(out)
    assert ds.sizes["covariate"] == 2 and ds.attrs["prior_name"] == "revenue"
    assert np.all(np.isfinite(ds.pi_raw.values)) and np.all(ds.y.values >= 0)
