r"""The posterior Neyman teacher from NUTS on the full model of the prior, vectorized over tasks.

For every task of a batch the teacher keeps draws :math:`z^{(s)} \sim p(z \mid H_{1..n})` of the
latent coefficients of the prior's NumPyro model (the heteroskedastic series model of
:func:`~bayesdesign.models.numpyro_model`, or the user's model of a ``model:`` prior) and decides
with the posterior Neyman rule

.. math::
    \pi(x) = \frac{\bar s_1(x)}{\bar s_1(x) + \bar s_0(x)}, \qquad
    \bar s_a(x) = \frac1S \sum_{s=1}^S \max\!\big(\sigma_a(x; z^{(s)}), \sqrt{\text{floor}\cdot v_{0,a}}\big)

(:mod:`bayesdesign.teachers._sampling` has the padding, refit schedule and floor). The draws come
from NumPyro's functional NUTS (:func:`numpyro.infer.hmc.hmc`, diagonal mass matrix: the dense
one needs LAPACK Cholesky calls, which deadlocked batched on this machine), one chain per task
(``num_chains`` per task if asked) written as a pure function of the task's padded history and
``jax.vmap``-ed over tasks, so one compiled program advances every task of the batch:

- **cold fit** (first fit): start at the prior median, step size 1, identity mass matrix,
  ``num_warmup`` adaptation steps (dual averaging of the step size, windowed Welford estimate of
  the diagonal inverse mass matrix), then ``num_samples`` draws;
- **warm refit**: start each chain at its last draw of the previous fit with its adapted step size
  and inverse mass matrix, and adapt only ``warm_warmup`` steps (default ``num_warmup // 3``):
  the posterior after :math:`n + r` units is close to the one after :math:`n`.

Vectorized chains run in lockstep: a NUTS iteration costs the longest trajectory in the batch.
``max_tree_depth`` (default 4: at most 15 leapfrog steps) caps it; with NumPyro's default 10 the
occasional 31-step tree of one task made a batch of 16 wait 1.8 times the mean trajectory. On a
CPU the batched gradient costs about as much per task as an unbatched one, so the gain over one
task at a time is small there (measured in ``benchmarks/teachers_sampling.py``); ``chunk``
vectorizes over chunks of tasks instead of all of them at once.

Diagnostics of the last fit are kept per task in the state (``divergences``, ``accept_prob``,
``tree_size``, ``step_size``, and split :math:`\hat R` / bulk ESS of the unconstrained
coefficients, worst over coefficients; with one chain :math:`\hat R` is the split-chain value).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpyro.infer.hmc import hmc

from ..diagnostics.convergence import ess_tail
from ._sampling import FitResult, ModelParts, SampledState, SampledTeacher, _check_int
from .base import TeacherConfig

__all__ = ["NUTSTeacher", "NUTSSettings", "NUTSWarm", "ChainResult", "nuts_chain", "make_nuts_fit"]


_COMPILED: dict = {}


class NUTSSettings(NamedTuple):
    """Static settings of one NUTS run (hashable: part of the compiled program)."""

    num_warmup: int = 300
    num_samples: int = 300
    max_tree_depth: int = 4
    target_accept_prob: float = 0.8
    adapt_mass_matrix: bool = True


class ChainResult(NamedTuple):
    """One chain (or a vector of chains, leading axes): draws ``z`` (S, D) of the flat
    unconstrained latents, their constrained ``latent`` dict (S, ...), per-draw ``diverging``,
    ``num_steps`` (leapfrog steps) and ``accept_prob``, and the warm-start carry ``last_z`` (D,),
    ``step_size`` (), ``inverse_mass_matrix`` (D,)."""

    z: jnp.ndarray
    latent: dict
    diverging: jnp.ndarray
    num_steps: jnp.ndarray
    accept_prob: jnp.ndarray
    last_z: jnp.ndarray
    step_size: jnp.ndarray
    inverse_mass_matrix: jnp.ndarray


class NUTSWarm(NamedTuple):
    """Warm-start carry, arrays (K, B, C, ...): last draw ``z`` (.., D), adapted ``step_size``,
    diagonal ``inverse_mass_matrix`` (.., D)."""

    z: np.ndarray
    step_size: np.ndarray
    inverse_mass_matrix: np.ndarray


def nuts_chain(parts: ModelParts, settings: NUTSSettings, key, z0, step_size, inverse_mass_matrix,
               feats, a, y, mask) -> ChainResult:
    r"""One NUTS chain on one task's padded history (a pure function: ``jax.vmap`` it over tasks).

    The potential is :math:`U(z) = -\log p(y_{\text{mask}}, z)` of ``parts.fit_model`` at the
    flat unconstrained ``z`` (D,). Runs ``settings.num_warmup`` adaptation steps from ``z0`` with
    initial ``step_size`` and diagonal ``inverse_mass_matrix``, then ``settings.num_samples``
    draws (``jax.lax.scan``).
    """
    energy = parts.potential_gen(feats, a, y, mask)

    def potential(z):
        return energy(parts.unravel(z))

    init_kernel, sample_kernel = hmc(potential, algo="NUTS")
    state = init_kernel(
        z0, settings.num_warmup, step_size=step_size, inverse_mass_matrix=inverse_mass_matrix,
        adapt_mass_matrix=settings.adapt_mass_matrix, target_accept_prob=settings.target_accept_prob,
        max_tree_depth=settings.max_tree_depth, rng_key=key,
    )
    state = lax.fori_loop(0, settings.num_warmup, lambda i, s: sample_kernel(s), state)

    def step(s, _):
        s = sample_kernel(s)
        return s, (s.z, s.diverging, s.num_steps, s.accept_prob)

    state, (zs, div, steps, acc) = lax.scan(step, state, None, length=settings.num_samples)
    latent = jax.vmap(parts.constrain)(zs)
    adapt = state.adapt_state
    return ChainResult(zs, latent, div, steps, acc, state.z, adapt.step_size, adapt.inverse_mass_matrix)


def make_nuts_fit(parts: ModelParts, settings: NUTSSettings):
    """``fit(keys, z0, step_size, inverse_mass_matrix, feats, a, y, mask) -> ChainResult``: the
    jitted :func:`nuts_chain` vectorized over a leading axis of every argument."""
    return jax.jit(jax.vmap(partial(nuts_chain, parts, settings)))


class NUTSTeacher(SampledTeacher):
    r"""Posterior Neyman teacher from NUTS (NumPyro) on the prior's full model.

    A :class:`~bayesdesign.design.policy.SequentialPolicy` over a batch of tasks run in lockstep
    (state: :class:`~bayesdesign.teachers._sampling.SampledState`); the draws condition on the
    first :math:`n(t)` units (refits every ``refit_every`` units after the burn-in, see
    :mod:`bayesdesign.teachers._sampling`). ``decide`` gives ``pi`` (unclipped), ``sbar``,
    ``mean``, ``log_sd_mean``, ``log_sd_sd`` and ``class_prob`` like the conjugate teacher.

    Smoothness mixtures: each class is fitted by NUTS (its own model; a discrete class is not a
    NUTS variable) and the classes are mixed with the model's own :math:`P(k \mid H)`, the
    evidence of each class estimated by importance sampling around its draws
    (:mod:`bayesdesign.teachers.evidence`), or on request with the conjugate teacher's.

    Parameters
    ----------
    spec : prior (spec, path or shipped name).
    config : :class:`~bayesdesign.teachers.base.TeacherConfig` (burn-in, floor, clip).
    num_warmup : adaptation steps of a cold fit (the first one, and :meth:`posterior`).
    num_samples : draws per chain kept after each fit.
    refit_every : units between refits.
    early_refits : also refit at ``burn_in`` times 1, 2, 4, ... units below ``refit_every``.
    max_units : fixed padded history length (one compiled program; histories longer than it are
        an error); ``None`` pads to powers of two (a few compilations per process).
    seed : seed of every fit (the fit on ``n`` units of task ``b`` uses key
        ``fold_in(fold_in(fold_in(key(seed), n), class), b)``).
    warm_warmup : adaptation steps of warm refits (default ``num_warmup // 3``).
    warm_adapt_mass : re-estimate the mass matrix during warm refits (else keep the previous one
        and adapt the step size only).
    num_chains : chains per task (their draws are pooled; :math:`\hat R` across them).
    max_tree_depth : NUTS trees have at most :math:`2^{\text{depth}} - 1` leapfrog steps. The default 4
        (NumPyro's is 10) is for lockstep: on the shipped series priors the sampler wants 15 steps
        most of the time and 31 now and then, and one task's 31-step tree makes every task of the
        batch wait; capping at 15 cost little ESS (benchmark (b)). Raise it for harder user models.
    target_accept_prob : dual-averaging target of the step size adaptation.
    chunk : vectorize over chunks of this many tasks (``None``: all at once; 1: one at a time).
    class_weights : smoothness mixtures: ``"model"`` (the model's own class posterior, default) or
        ``"conjugate"`` (the conjugate working model's); see
        :class:`~bayesdesign.teachers._sampling.SampledTeacher`.
    evidence_draws : proposal draws per task and class of the importance-sampling evidence.
    """

    name = "teacher:nuts"

    def __init__(self, spec, config: TeacherConfig | None = None, num_warmup: int = 300, num_samples: int = 300,
                 refit_every: int = 100, max_units: int | None = None, seed: int = 0, *,
                 warm_warmup: int | None = None, warm_adapt_mass: bool = True, num_chains: int = 1,
                 max_tree_depth: int = 4, target_accept_prob: float = 0.8, chunk: int | None = None,
                 early_refits: bool = True, class_weights: str = "model", evidence_draws: int = 1000):
        _check_int("num_warmup", num_warmup)
        _check_int("num_samples", num_samples)
        _check_int("num_chains", num_chains)
        _check_int("max_tree_depth", max_tree_depth)
        if warm_warmup is not None:
            _check_int("warm_warmup", warm_warmup, 0)
        if chunk is not None:
            _check_int("chunk", chunk)
        if not 0.0 < target_accept_prob < 1.0:
            raise ValueError(f"target_accept_prob: expected a number in (0, 1), got {target_accept_prob!r}")
        self.num_warmup, self.num_samples, self.num_chains = int(num_warmup), int(num_samples), int(num_chains)
        self.warm_warmup = int(num_warmup // 3 if warm_warmup is None else warm_warmup)
        self.warm_adapt_mass = bool(warm_adapt_mass)
        self.max_tree_depth, self.target_accept_prob = int(max_tree_depth), float(target_accept_prob)
        self.chunk = chunk
        self.num_draws = self.num_samples * self.num_chains
        super().__init__(spec, config, refit_every, max_units, seed, early_refits, class_weights, evidence_draws)

    def settings(self, warm: bool, num_samples: int | None = None) -> NUTSSettings:
        """The :class:`NUTSSettings` of a cold or warm fit."""
        return NUTSSettings(
            self.warm_warmup if warm else self.num_warmup,
            self.num_samples if num_samples is None else int(num_samples),
            self.max_tree_depth,
            self.target_accept_prob,
            self.warm_adapt_mass if warm else True,
        )

    def _fit_fn(self, k: int, settings: NUTSSettings):
        """The compiled vectorized fit of class ``k`` (shared by the teachers of one prior)."""
        key = (self.spec.hash(), k, settings)
        if key not in _COMPILED:
            _COMPILED[key] = make_nuts_fit(self.parts[k], settings)
        return _COMPILED[key]

    def _run(self, fn, args: tuple) -> ChainResult:
        """``fn`` over the leading axis of ``args``, in chunks of ``self.chunk`` (the last one padded
        by repeating its first row, so every chunk has the same shape: one compilation)."""
        n = args[0].shape[0]
        size = n if self.chunk is None else min(self.chunk, n)
        outs = []
        for lo in range(0, n, size):
            part = [v[lo:lo + size] for v in args]
            m = part[0].shape[0]
            if m < size:
                part = [jnp.concatenate([v, jnp.repeat(v[:1], size - m, 0)]) for v in part]
            out = fn(*part)
            outs.append(jax.tree_util.tree_map(lambda v, m=m: np.asarray(v[:m]), out))
        return jax.tree_util.tree_map(lambda *v: np.concatenate(v), *outs)

    def _fit(self, warm, feats: tuple, keys, num_draws: int | None = None) -> FitResult:
        c = self.num_chains
        num_samples = None if num_draws is None else max(1, -(-int(num_draws) // c))
        settings = self.settings(warm is not None, num_samples)
        b = keys.shape[1]
        results = []
        for k, parts in enumerate(self.parts):
            chain_keys = jax.vmap(lambda kk: jax.vmap(partial(jax.random.fold_in, kk))(jnp.arange(c)))(keys[k])
            chain_keys = chain_keys.reshape(b * c, *chain_keys.shape[2:])
            dim = parts.init_flat.shape[0]
            if warm is None:
                z0 = jnp.broadcast_to(jnp.asarray(parts.init_flat, jnp.float32), (b * c, dim))
                if c > 1:  # overdispersed starts for R-hat
                    z0 = z0 + jax.vmap(partial(_jitter, dim=dim))(chain_keys)
                step = jnp.ones(b * c)
                inv_mass = jnp.ones((b * c, dim))
            else:
                z0 = jnp.asarray(warm.z[k].reshape(b * c, dim))
                step = jnp.asarray(warm.step_size[k].reshape(b * c))
                inv_mass = jnp.asarray(warm.inverse_mass_matrix[k].reshape(b * c, dim))
            data = tuple(jnp.repeat(v, c, axis=0) for v in feats[k])
            res = self._run(self._fit_fn(k, settings), (chain_keys, z0, step, inv_mass, *data))
            results.append(jax.tree_util.tree_map(lambda v: v.reshape(b, c, *v.shape[1:]), res))
        return _collect(results)

    def diagnostics(self, state: SampledState) -> dict[str, np.ndarray]:
        """Diagnostics of the last fit, each (B,): ``divergences`` (post-warmup divergent
        transitions, all chains and classes), ``accept_prob`` and ``tree_size`` (mean leapfrog
        steps per draw), ``step_size``, ``rhat`` (worst split :math:`\\hat R` over the
        unconstrained coefficients), ``ess`` (smallest bulk ESS) and ``ess_tail`` (smallest tail
        ESS); with the model's class weights of a mixture also ``evidence_khat``,
        ``evidence_fallback`` and ``evidence_tv`` (see
        :meth:`~bayesdesign.teachers._sampling.SampledTeacher._model_class_prob`)."""
        return dict(state.diagnostics)


def _jitter(key, dim: int) -> jnp.ndarray:
    """Uniform(-1, 1) offsets of a chain's cold start (several chains per task)."""
    return jax.random.uniform(jax.random.fold_in(key, 2**31 - 1), (dim,), minval=-1.0, maxval=1.0)


def _collect(results: list[ChainResult]) -> FitResult:
    """Stack per-class chain results (each leaf (B, C, ...)) into draws, warm carry, diagnostics."""
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    draws = {
        name: np.stack([r.latent[name].reshape(r.latent[name].shape[0], -1, *r.latent[name].shape[3:])
                        for r in results], 1)
        for name in results[0].latent
    }
    warm = NUTSWarm(*(np.stack([getattr(r, f) for r in results]) for f in ("last_z", "step_size",
                                                                            "inverse_mass_matrix")))
    z = np.stack([r.z for r in results], 1)  # (B, K, C, S, D)
    zc = np.moveaxis(z, (2, 3), (0, 1)).astype(np.float64)  # (C, S, B, K, D)
    with warnings.catch_warnings():  # a chain that barely moved has no R-hat / ESS: NaN, flagged in traces
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat = np.asarray(split_gelman_rubin(zc)) if zc.shape[1] >= 4 else np.full(zc.shape[2:], np.nan)
        ess = np.asarray(effective_sample_size(zc)) if zc.shape[1] >= 4 else np.full(zc.shape[2:], np.nan)
        rhat_max = np.nanmax(rhat, axis=(1, 2)) if np.isfinite(rhat).any() else np.full(z.shape[0], np.nan)
        ess_min = np.nanmin(ess, axis=(1, 2)) if np.isfinite(ess).any() else np.full(z.shape[0], np.nan)
    div = np.stack([r.diverging for r in results], 1)  # (B, K, C, S)
    steps = np.stack([r.num_steps for r in results], 1)
    acc = np.stack([r.accept_prob for r in results], 1)
    diagnostics = {
        "divergences": div.sum((1, 2, 3)),
        "accept_prob": acc.mean((1, 2, 3)),
        "tree_size": steps.mean((1, 2, 3)),
        "step_size": warm.step_size.mean((0, 2)),
        "rhat": rhat_max,
        "ess": ess_min,
    }
    if zc.shape[1] >= 4:  # smallest tail ESS (ArviZ's definition; diagnostics.convergence.ess_tail)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            diagnostics["ess_tail"] = np.nanmin(ess_tail(zc), axis=(1, 2))
    stats = {"diverging": div, "tree_size": steps, "acceptance_rate": acc}
    return FitResult(draws, warm, diagnostics, stats, z.reshape(*z.shape[:2], -1, z.shape[-1]))
