"""A user NumPyro model (``model:`` prior) as a task distribution: prior draws of its latents,
its ``mean``/``sd`` sites at any covariate, outcomes from its likelihood, and the protocol errors.
Checked against the closed form of the dose-response model in ``_user_models.py``."""

import numpy as np
import pytest

from bayesdesign.design.runner import draw_experiments
from bayesdesign.efficiency import truth
from bayesdesign.models import PriorTasks, sample_tasks
from bayesdesign.spec import PriorSpec

DOSE = {"name": "dose", "description": "dose-response user model",
        "covariates": [{"name": "dose", "low": 0, "high": 10}], "model": "_user_models:dose_response"}


def dose_spec(model: str = "dose_response") -> PriorSpec:
    return PriorSpec.from_dict({**DOSE, "model": f"_user_models:{model}"}, source="dose.yaml")


def closed_form(env, x):
    """Per task and arm: mean b0 + b1 u, sd exp(g0 + g1 u), u = dose / 10 (from the drawn latents)."""
    lat = {k: np.asarray(v, float) for k, v in env.env.latent.items()}
    u = x[..., 0] / 10.0
    return {a: (lat["b0"][:, a, None] + lat["b1"][:, a, None] * u,
                np.exp(lat["g0"][:, a, None] + lat["g1"][:, a, None] * u)) for a in (0, 1)}


def test_model_tasks_follow_the_model():
    spec = dose_spec()
    env, classes = sample_tasks(spec, np.random.default_rng(0), 6)
    assert np.all(classes == 0) and env.n_tasks == 6 and env.bounds[1][0] == 10.0
    rng = np.random.default_rng(1)
    x = np.stack([env.sample_covariates(rng, 9) for _ in range(6)])
    assert np.all((x >= 0) & (x <= 10))
    cf = closed_form(env, x)
    for a in (0, 1):
        np.testing.assert_allclose(env.mean(x, a), cf[a][0], atol=1e-5)
        np.testing.assert_allclose(env.sd(x, a), cf[a][1], rtol=1e-5)
    lat = {k: np.asarray(v, float) for k, v in env.env.latent.items()}
    np.testing.assert_allclose(env.ate, lat["b0"][:, 1] - lat["b0"][:, 0] + 0.5 * (lat["b1"][:, 1] - lat["b1"][:, 0]),
                               atol=1e-5)
    # outcomes from the model's likelihood: 4000 draws at one dose per task match mean and sd
    xs = np.full((6, 4000, 1), 7.0)
    cf7 = closed_form(env, xs[:, :1])
    for a in (0, 1):
        y = env.sample_outcomes(np.random.default_rng(2 + a), xs, a)
        mu, sd = cf7[a]
        z = (y.mean(1) - mu[:, 0]) / (sd[:, 0] / np.sqrt(4000))
        assert np.all(np.abs(z) < 4.5)
        np.testing.assert_allclose(y.std(1), sd[:, 0], rtol=0.06)
    # the same generator gives the same tasks and outcomes
    env2, _ = sample_tasks(spec, np.random.default_rng(0), 6)
    np.testing.assert_array_equal(env2.mean(x, 1), env.mean(x, 1))


def test_model_task_latents_are_prior_draws():
    env, _ = sample_tasks(dose_spec(), np.random.default_rng(5), 4000)
    lat = {k: np.asarray(v, float) for k, v in env.env.latent.items()}
    assert lat["b0"].shape == (4000, 2)
    np.testing.assert_allclose(lat["b0"].std(0), 2.0, rtol=0.05)
    np.testing.assert_allclose(lat["g1"].std(0), 0.7, rtol=0.05)
    assert np.all(np.abs(lat["b1"].mean(0)) < 0.15)
    assert abs(np.corrcoef(lat["b0"][:, 0], lat["b0"][:, 1])[0, 1]) < 0.06


def test_model_prior_runs_as_a_scenario():
    tasks = PriorTasks(dose_spec())
    env, x, y0, y1, _ = draw_experiments(tasks, horizon=20, reps=3, seed=0)
    assert x.shape == (3, 20, 1) and np.all(np.isfinite(y0)) and np.all(np.isfinite(y1))
    tr = truth(env)
    cf = closed_form(env, np.broadcast_to(np.linspace(0.0025, 9.9975, 2000)[:, None], (3, 2000, 1)))
    tau_x = cf[1][0] - cf[0][0]
    v_star = ((cf[1][1] + cf[0][1]) ** 2).mean(1) + tau_x.var(1)
    np.testing.assert_allclose(tr.v_star, v_star, rtol=1e-4)


@pytest.mark.parametrize(
    "model, expect",
    [
        ("no_mean", r"dose\.yaml: model: '_user_models:no_mean': no site 'mean': expected numpyro\.deterministic"),
        ("sd_wrong_shape", r"'_user_models:sd_wrong_shape': site 'sd' has shape \(5,\) .*expected \(2, q\)"),
        ("discrete_latent", r"'_user_models:discrete_latent': latent site 'k' is discrete .*expected continuous"),
        ("no_outcome_site", r"'_user_models:no_outcome_site': no observed site 'y': expected numpyro\.sample\('y'"),
        ("per_unit_latent", r"'_user_models:per_unit_latent': latent site 'e' has shape \(3,\) with 3 units .*global"),
    ],
)
def test_protocol_errors_name_model_site_and_expectation(model, expect):
    with pytest.raises(ValueError, match=expect):
        PriorTasks(dose_spec(model))
    with pytest.raises(ValueError, match=expect):
        sample_tasks(dose_spec(model), np.random.default_rng(0), 2)


@pytest.mark.slow
def test_nuts_passes_sbc_on_a_user_model():
    """Tasks drawn from the dose-response model, NUTS on the same model: ranks uniform."""
    from bayesdesign.diagnostics.sbc import run_sbc

    ds = run_sbc(dose_spec(), "nuts", sims=120, units=40, draws=50, thin=4, seed=3,
                 teacher_kwargs={"num_warmup": 300, "max_tree_depth": 6})
    assert ds.attrs["passed"] == 1, ds.attrs["verdict"]
    assert float(ds.fit_divergences.mean()) < 1.0
