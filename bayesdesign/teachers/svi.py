r"""The posterior Neyman teacher from stochastic variational inference, vectorized over tasks.

Same interface and decisions as :class:`~bayesdesign.teachers.nuts.NUTSTeacher` (see
:mod:`bayesdesign.teachers._sampling`), with the draws from a variational approximation
:math:`q_\lambda(z) \approx p(z \mid H_{1..n})` fitted by maximizing the ELBO

.. math::
    \mathcal L(\lambda) = E_{q_\lambda}[\log p(y, z) - \log q_\lambda(z)]

with Adam (``numpyro.infer.SVI``, one-particle ``Trace_ELBO``), the step size decaying
geometrically from ``lr`` to ``lr / 10`` over each fit so that the last iterate is not left
jittering at the scale of ``lr``. The SVI loop is ``svi.init`` followed by ``svi.update`` inside
``jax.lax.scan``, a pure function of one task's padded history, ``jax.vmap``-ed over tasks.
Refits are warm-started from the previous fit's variational parameters (``warm_steps`` steps,
default ``num_steps // 4``).

Guides (in the unconstrained latent space, :math:`D` coefficients):

- ``"normal"``: ``AutoNormal``, :math:`q = \prod_i N(m_i, s_i^2)` (mean field). For a Gaussian
  posterior its optimum has the exact mean and variances :math:`1 / \Lambda_{ii}` (too narrow
  where coefficients are correlated).
- ``"mvn"``: ``AutoMultivariateNormal``, :math:`q = N(m, LL^\top)`.
- ``"laplace"``: MAP by SVI with ``AutoLaplaceApproximation``'s point-mass guide, then
  :math:`q = N(\hat z, H^{-1})` with :math:`H` the Hessian of :math:`-\log p(y, z)` at
  :math:`\hat z` for each task's own data, factored by the loop-based Cholesky of
  :mod:`bayesdesign.linalg` (NumPyro's own Laplace guide would evaluate the Hessian on the data of
  its first call, and uses LAPACK, which deadlocked batched on this machine).

Draws are :math:`z = m + \text{scale} \cdot \varepsilon` in the unconstrained space, mapped to
the constrained latents. ``diagnostics`` keeps the final ELBO loss per task (mean of the last 10%
of steps).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoLaplaceApproximation, AutoMultivariateNormal, AutoNormal
from numpyro.infer.initialization import init_to_median
from numpyro.optim import Adam

from .. import linalg
from ._sampling import FitResult, ModelParts, SampledTeacher, _check_int, dummy_args
from .base import TeacherConfig

__all__ = ["SVITeacher", "SVISettings", "GUIDES", "make_guide", "make_svi_fit"]

GUIDES = ("normal", "mvn", "laplace")
_COMPILED: dict = {}
_GUIDES: dict = {}


class SVISettings(NamedTuple):
    """Static settings of one SVI fit."""

    guide: str = "normal"
    num_steps: int = 2000
    lr: float = 0.02
    num_draws: int = 200


def make_guide(parts: ModelParts, kind: str, d: int):
    """An autoguide of ``kind`` for ``parts.fit_model``, its prototype set up on dummy data
    outside any transformation (so that vmapped fits do not leak tracers into it)."""
    init = init_to_median(num_samples=15)
    if kind == "normal":
        guide = AutoNormal(parts.fit_model, init_loc_fn=init)
    elif kind == "mvn":
        guide = AutoMultivariateNormal(parts.fit_model, init_loc_fn=init)
    elif kind == "laplace":
        guide = AutoLaplaceApproximation(parts.fit_model, init_loc_fn=init)
    else:
        raise ValueError(f"guide: expected one of {list(GUIDES)}, got {kind!r}")
    x, a, y, mask, _ = dummy_args(d)
    SVI(parts.fit_model, guide, Adam(0.01), Trace_ELBO()).init(jax.random.PRNGKey(0), parts.featurize(x), a, y, mask)
    return guide


def _flat_posterior(parts: ModelParts, guide, kind: str, params: dict, data: tuple):
    """Mean (D,) of the approximation and a function mapping standard normal noise (S, D) to
    unconstrained draws (S, D), both in the order of ``parts.unravel`` (sorted site names; the
    ``AutoContinuous`` guides order their flat latent as the model samples the sites)."""
    if kind == "normal":
        loc, _ = ravel_pytree({k: params[f"{k}_auto_loc"] for k in parts.latent_names})
        scale, _ = ravel_pytree({k: params[f"{k}_auto_scale"] for k in parts.latent_names})
        return loc, lambda eps: loc + eps * scale

    def reorder(flat):
        unpacked = guide._unpack_latent(flat)
        return ravel_pytree({k: unpacked[k] for k in parts.latent_names})[0]

    if kind == "mvn":
        loc, tril = params["auto_loc"], params["auto_scale_tril"]
        return reorder(loc), lambda eps: jax.vmap(reorder)(loc + eps @ tril.T)
    loc = reorder(params["auto_loc"])
    energy = parts.potential_gen(*data)
    hess = jax.hessian(lambda z: energy(parts.unravel(z)))(loc)
    hess = 0.5 * (hess + hess.T) + 1e-6 * jnp.eye(loc.shape[0])
    chol = linalg.cholesky(hess)
    return loc, lambda eps: loc + linalg.solve_upper_t(chol, eps.T).T  # covariance H^-1 = L^-T L^-1


class SVIResult(NamedTuple):
    """One task's fit: guide ``params``, unconstrained draws ``z`` (S, D), constrained ``latent``
    draws, final ``loss`` (mean ELBO loss over the last 10% of steps)."""

    params: dict
    z: jnp.ndarray
    latent: dict
    loss: jnp.ndarray


def svi_task(parts: ModelParts, guide, settings: SVISettings, key, init_params, feats, a, y, mask) -> SVIResult:
    r"""Fit ``guide`` to one task's padded history (a pure function: ``jax.vmap`` it over tasks).

    ``init_params``: constrained guide parameters to start from (``None``: the guide's own
    initialization at the prior median). ``settings.num_steps`` Adam steps with step size
    :math:`\text{lr}\cdot 10^{-i/\text{num\_steps}}`, then ``settings.num_draws`` draws.
    """
    n_steps, lr = settings.num_steps, settings.lr
    optim = Adam(lambda i: lr * 10.0 ** (-i / n_steps))
    svi = SVI(parts.fit_model, guide, optim, Trace_ELBO())
    k_init, k_draw = jax.random.split(key)
    data = (feats, a, y, mask)
    state = svi.init(k_init, *data, init_params=init_params)
    state, losses = lax.scan(lambda s, _: svi.update(s, *data), state, None, length=n_steps)
    params = svi.get_params(state)
    _, draw = _flat_posterior(parts, guide, settings.guide, params, data)
    z = draw(jax.random.normal(k_draw, (settings.num_draws, parts.init_flat.shape[0])))
    latent = jax.vmap(parts.constrain)(z)
    tail = max(1, n_steps // 10)
    return SVIResult(params, z, latent, losses[-tail:].mean())



def make_svi_fit(parts: ModelParts, guide, settings: SVISettings, warm: bool):
    """``fit(keys, init_params, feats, a, y, mask) -> SVIResult`` (``init_params`` omitted when
    ``warm`` is False): the jitted :func:`svi_task` vectorized over a leading task axis."""
    if warm:
        return jax.jit(jax.vmap(partial(svi_task, parts, guide, settings)))
    return jax.jit(jax.vmap(lambda key, *data: svi_task(parts, guide, settings, key, None, *data)))


class SVITeacher(SampledTeacher):
    r"""Posterior Neyman teacher from SVI (NumPyro autoguides) on the prior's full model.

    Same state, schedule, decisions and mixture handling as
    :class:`~bayesdesign.teachers.nuts.NUTSTeacher`; the draws come from the fitted guide.

    Parameters
    ----------
    spec, config, refit_every, max_units, seed, early_refits : as for the NUTS teacher.
    guide : ``"normal"`` (AutoNormal, default), ``"mvn"`` (AutoMultivariateNormal) or ``"laplace"``.
    num_steps : Adam steps of a cold fit; ``warm_steps`` of a warm refit (default ``num_steps // 4``).
    lr : initial Adam step size (decays to ``lr / 10`` over each fit).
    num_draws : draws kept per task after each fit.
    class_weights, evidence_draws : smoothness mixtures, as for the NUTS teacher (the guide's draws
        place the importance-sampling proposal of each class's evidence).
    """

    name = "teacher:svi"

    def __init__(self, spec, config: TeacherConfig | None = None, guide: str = "normal", num_steps: int = 2000,
                 lr: float = 0.02, num_draws: int = 200, refit_every: int = 100, max_units: int | None = None,
                 seed: int = 0, *, warm_steps: int | None = None, early_refits: bool = True,
                 class_weights: str = "model", evidence_draws: int = 1000):
        if guide not in GUIDES:
            raise ValueError(f"guide: expected one of {list(GUIDES)}, got {guide!r}")
        _check_int("num_steps", num_steps)
        _check_int("num_draws", num_draws)
        if warm_steps is not None:
            _check_int("warm_steps", warm_steps)
        if not (isinstance(lr, int | float) and lr > 0):
            raise ValueError(f"lr: expected a positive number, got {lr!r}")
        self.guide, self.num_steps, self.lr, self.num_draws = guide, int(num_steps), float(lr), int(num_draws)
        self.warm_steps = int(max(1, num_steps // 4) if warm_steps is None else warm_steps)
        super().__init__(spec, config, refit_every, max_units, seed, early_refits, class_weights, evidence_draws)
        self.name = f"teacher:svi-{guide}" if guide != "normal" else "teacher:svi"

    def settings(self, warm: bool, num_draws: int | None = None) -> SVISettings:
        """The :class:`SVISettings` of a cold or warm fit."""
        return SVISettings(self.guide, self.warm_steps if warm else self.num_steps, self.lr,
                           self.num_draws if num_draws is None else int(num_draws))

    def _guide(self, k: int):
        key = (self.spec.hash(), k, self.guide)
        if key not in _GUIDES:
            _GUIDES[key] = make_guide(self.parts[k], self.guide, self.spec.d)
        return _GUIDES[key]

    def _fit_fn(self, k: int, settings: SVISettings, warm: bool):
        key = (self.spec.hash(), k, settings, warm)
        if key not in _COMPILED:
            _COMPILED[key] = make_svi_fit(self.parts[k], self._guide(k), settings, warm)
        return _COMPILED[key]

    def _fit(self, warm, feats: tuple, keys, num_draws: int | None = None) -> FitResult:
        settings = self.settings(warm is not None, num_draws)
        results = []
        for k in range(self.n_classes):
            if warm is None:
                res = self._fit_fn(k, settings, False)(keys[k], *feats[k])
            else:
                res = self._fit_fn(k, settings, True)(keys[k], warm[k], *feats[k])
            results.append(jax.tree_util.tree_map(np.asarray, res))
        draws = {name: np.stack([r.latent[name] for r in results], 1) for name in results[0].latent}
        loss = np.stack([r.loss for r in results], 1)
        flat = np.stack([r.z for r in results], 1)
        return FitResult(draws, tuple(r.params for r in results), {"loss": loss.sum(1)}, {}, flat)

    def diagnostics(self, state) -> dict[str, np.ndarray]:
        """``loss`` (B,): the final negative ELBO of the last fit (summed over classes); with the
        model's class weights of a mixture also ``evidence_khat``, ``evidence_fallback`` and
        ``evidence_tv`` (as for the NUTS teacher)."""
        return dict(state.diagnostics)
