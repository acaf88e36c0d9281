r"""Revenue per visitor: a zero-inflated lognormal user model (the protocol of ``docs/own_model.md``).

A visitor with covariates :math:`u \in [0, 1]^2` in arm :math:`a` buys with probability
:math:`p_a(u) = \mathrm{sigmoid}(\alpha_a + \beta_a \cdot u)` and then spends
:math:`\log V \sim N(m_a(u), s_a(u)^2)`; revenue is :math:`Y = 0` without a purchase, :math:`V`
with one. Log order value mean and log sd are additive cosine series (``TERMS`` per covariate,
smoothness :math:`\beta = 1`) with hierarchical scales,

.. math::
    m_a(u) = c^m_a + \tau_m \sum_{j, k} (j + 1)^{-3/2} z^m_{a,jk}\, \phi_j(u_k), \qquad
    \log s_a(u) = c^s_a + \tau_s \sum_{j, k} (j + 1)^{-3/2} z^s_{a,jk}\, \phi_j(u_k),

:math:`\tau_m \sim \mathrm{HalfNormal}(0.5)`, :math:`\tau_s \sim \mathrm{HalfNormal}(0.3)` shared by
the arms, :math:`z \sim N(0, 1)`, :math:`c^m_a \sim N(0, 0.5^2)`,
:math:`c^s_a \sim N(\log 0.6, 0.3^2)`, :math:`\alpha_a \sim N(-1, 1)`, :math:`\beta_a \sim N(0, I)`.
Outcomes are in units of a typical order value (so :math:`E[Y]` is about 0.3). The moments the
teachers use:

.. math::
    \mu_a = p_a e^{m_a + s_a^2 / 2}, \qquad
    \sigma_a^2 = p_a e^{2 m_a + 2 s_a^2} - \mu_a^2 .
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from ..design.environment import hurdle_lognormal_moments
from ..models import HurdleLogNormal as ZeroInflatedLogNormal

__all__ = ["revenue", "ZeroInflatedLogNormal", "TERMS", "moments"]

TERMS = 4


def _features(u):
    """Cosine features without the intercept, (n, 2 TERMS), and their prior weights (2 TERMS,)."""
    j = jnp.arange(1, TERMS + 1, dtype=u.dtype)
    phi = jnp.sqrt(2.0) * jnp.cos(jnp.pi * u[..., :, None] * j)  # (n, 2, TERMS)
    weights = jnp.tile((j + 1.0) ** -1.5, 2)
    return phi.reshape(*u.shape[:-1], 2 * TERMS), weights


def moments(logits, loc, scale):
    """Mean and sd of the zero-inflated lognormal (:func:`~bayesdesign.design.environment.hurdle_lognormal_moments`)."""
    return hurdle_lognormal_moments(jax.nn.sigmoid(logits), loc, scale)


def revenue(x, a, y, mask, x_query):
    """``model(x, a, y, mask, x_query)``: revenue per visitor (see the module notes)."""
    mask = jnp.asarray(mask, dtype=bool)
    x = jnp.where(mask[:, None], x, 0.5)
    a = jnp.where(mask, a, 0).astype(jnp.int32)
    if y is not None:
        y = jnp.where(mask, y, 0.0)
    alpha = numpyro.sample("alpha", dist.Normal(-1.0, 1.0).expand([2]).to_event(1))
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([2, 2]).to_event(2))
    c_m = numpyro.sample("c_mean", dist.Normal(0.0, 0.5).expand([2]).to_event(1))
    c_s = numpyro.sample("c_logsd", dist.Normal(jnp.log(0.6), 0.3).expand([2]).to_event(1))
    tau_m = numpyro.sample("tau_mean", dist.HalfNormal(0.5))
    tau_s = numpyro.sample("tau_logsd", dist.HalfNormal(0.3))
    z_m = numpyro.sample("z_mean", dist.Normal(0.0, 1.0).expand([2, 2 * TERMS]).to_event(2))
    z_s = numpyro.sample("z_logsd", dist.Normal(0.0, 1.0).expand([2, 2 * TERMS]).to_event(2))

    def params(u):  # (n, 2) -> logits, log-amount mean and sd per arm, (2, n)
        phi, w = _features(u)
        logits = alpha[:, None] + beta @ u.T
        loc = c_m[:, None] + tau_m * (z_m * w) @ phi.T
        scale = jnp.exp(c_s[:, None] + tau_s * (z_s * w) @ phi.T)
        return logits, loc, scale

    logits, loc, scale = params(x)
    pick = lambda v: jnp.where(a == 1, v[1], v[0])  # noqa: E731
    with numpyro.plate("units", a.shape[0]), numpyro.handlers.mask(mask=mask):
        numpyro.sample("y", ZeroInflatedLogNormal(pick(logits), pick(loc), pick(scale)), obs=y)
    mean, sd = moments(*params(x_query))
    numpyro.deterministic("mean", mean)
    numpyro.deterministic("sd", sd)
