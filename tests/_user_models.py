"""User NumPyro models for the tests: the dose-response model of docs/own_model.md and variants
that break the model protocol in one way each. Imported by prior files as ``_user_models:NAME``
(tests put this folder on ``sys.path``)."""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist


def _clean(x, a, y, mask):
    mask = jnp.asarray(mask, dtype=bool)
    x = jnp.where(mask[:, None], x, 0.5)
    a = jnp.where(mask, a, 0).astype(jnp.int32)
    if y is not None:
        y = jnp.where(mask, y, 0.0)
    return x, a, y, mask


def _params():
    b0 = numpyro.sample("b0", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    b1 = numpyro.sample("b1", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    g0 = numpyro.sample("g0", dist.Normal(0.0, 0.7).expand([2]).to_event(1))
    g1 = numpyro.sample("g1", dist.Normal(0.0, 0.7).expand([2]).to_event(1))
    return b0, b1, g0, g1


def dose_response(x, a, y, mask, x_query, site_mean="mean", sd_shape_ok=True):
    """Per arm: mean b0 + b1 u, log sd g0 + g1 u on the unit-cube dose u."""
    x, a, y, mask = _clean(x, a, y, mask)
    b0, b1, g0, g1 = _params()
    u = x[:, 0]
    with numpyro.plate("units", a.shape[0]), numpyro.handlers.mask(mask=mask):
        numpyro.sample("y", dist.Normal(b0[a] + b1[a] * u, jnp.exp(g0[a] + g1[a] * u)), obs=y)
    q = x_query[:, 0]
    numpyro.deterministic(site_mean, b0[:, None] + b1[:, None] * q[None, :])
    sd = jnp.exp(g0[:, None] + g1[:, None] * q[None, :])
    numpyro.deterministic("sd", sd if sd_shape_ok else sd[1])


def no_mean(x, a, y, mask, x_query):
    dose_response(x, a, y, mask, x_query, site_mean="mu")


def sd_wrong_shape(x, a, y, mask, x_query):
    dose_response(x, a, y, mask, x_query, sd_shape_ok=False)


def discrete_latent(x, a, y, mask, x_query):
    x, a, y, mask = _clean(x, a, y, mask)
    k = numpyro.sample("k", dist.Bernoulli(0.5))
    sd = jnp.exp(0.5 * k) * jnp.ones((2, x_query.shape[0]))
    with numpyro.plate("units", a.shape[0]), numpyro.handlers.mask(mask=mask):
        numpyro.sample("y", dist.Normal(0.0, jnp.exp(0.5 * k)), obs=y)
    numpyro.deterministic("mean", jnp.zeros((2, x_query.shape[0])))
    numpyro.deterministic("sd", sd)


def no_outcome_site(x, a, y, mask, x_query):
    x, a, y, mask = _clean(x, a, y, mask)
    b0, b1, g0, g1 = _params()
    with numpyro.plate("units", a.shape[0]), numpyro.handlers.mask(mask=mask):
        numpyro.sample("obs", dist.Normal(b0[a], jnp.exp(g0[a])), obs=y)
    q = x_query[:, 0]
    numpyro.deterministic("mean", b0[:, None] + 0 * q[None, :])
    numpyro.deterministic("sd", jnp.exp(g0[:, None]) + 0 * q[None, :])


def per_unit_latent(x, a, y, mask, x_query):
    x, a, y, mask = _clean(x, a, y, mask)
    b0, b1, g0, g1 = _params()
    with numpyro.plate("units", a.shape[0]):
        e = numpyro.sample("e", dist.Normal(0.0, 1.0))
        with numpyro.handlers.mask(mask=mask):
            numpyro.sample("y", dist.Normal(b0[a] + e, jnp.exp(g0[a])), obs=y)
    numpyro.deterministic("mean", b0[:, None] + 0 * x_query[None, :, 0])
    numpyro.deterministic("sd", jnp.exp(g0[:, None]) + 0 * x_query[None, :, 0])


def task_truth(prior: str, seed: int, n: int = 3):
    """sd of both arms at five doses for ``n`` tasks drawn from ``prior`` (a Ray task in the tests)."""
    import numpy as np

    from bayesdesign.models import sample_tasks
    from bayesdesign.spec import load_prior

    env, _ = sample_tasks(load_prior(prior), np.random.default_rng(seed), n)
    x = np.broadcast_to(np.linspace(0.0, 10.0, 5)[:, None], (n, 5, 1))
    return np.stack([env.sd(x, 0), env.sd(x, 1)])


def niceness(_=None) -> int:
    """The calling process's nice value (for the Ray worker-priority test)."""
    import os

    return os.nice(0)
