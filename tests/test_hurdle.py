"""The hurdle lognormal outcome family: implied moments against Monte Carlo, prior-file tasks
against their own outcomes, the NumPyro likelihood against a hand-written one, the conjugate
teacher against the truth of a known task and against its own Monte Carlo posterior, schema
errors, and the hashes of every shipped prior and pretrained student unchanged."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from numpyro import handlers
from numpyro.infer.util import log_density
from scipy import stats
from scipy.special import expit

from bayesdesign.design.environment import HurdleLogNormalEnvironment, hurdle_lognormal_moments
from bayesdesign.design.policy import History
from bayesdesign.models import numpyro_model, sample_tasks
from bayesdesign.spec import PriorSpec, PriorSpecError, list_priors, load_prior
from bayesdesign.teachers import ConjugateTeacher, make_teacher
from bayesdesign.teachers.hurdle import HurdleConjugateTeacher

HURDLE = {
    "name": "hurdle-test",
    "covariates": [{"name": "x", "low": 0.0, "high": 1.0}],
    "outcome": {"family": "hurdle_lognormal"},
    "arms": {
        "shared": {
            "purchase": {"terms": 6, "offset": -1.0},
            "log_amount": {"terms": 6, "offset": 3.0, "scale": 0.5},
            "log_amount_sd": {"terms": 6, "offset": -0.3, "scale": 0.6},
        }
    },
}

# Hashes of the shipped priors before the hurdle family existed: checkpoints and traces pin them.
SHIPPED_HASHES = {
    "beta0.5.yaml": "45a086a99cc41b20174d3db5f49bd19cc43bebe902a463ed9790447a765b581e",
    "beta1.toml": "243065628d39e435b6604f22e862ab90fa49f13d5bd4caf3306fd54024de65e6",
    "beta1.yaml": "243065628d39e435b6604f22e862ab90fa49f13d5bd4caf3306fd54024de65e6",
    "beta2.yaml": "8d442efbffeffe790598cd59bf8c8f76c18a2c7e0b2aa254c7404f5ae0b799b0",
    "beta4.yaml": "a94f05bb2802707d2eaa3263851ae94d50d4c28e62e7a55ca622a09d6ddf1f6b",
    "binary.yaml": "22777c8eaa10c444162a5074de9e06394254f34eed0c44e20c136c0363443ca5",
    "checkout-score.yaml": "5cbc36b3853067280946466f1f30fb5cb7a948d5cbf3d61b44adb51cd037c459",
    "checkout.yaml": "b4927e9a5ead168da03916cb028567c60e4f688de3365c77249b390dac4b74b4",
    "smoothness-mixture.yaml": "e7e8657e5bc1835e9d60a639c55fc6955c09da8ba3ffd5fbbbeadb6adae098a5",
    "student-t.yaml": "58de2abc561ec843bf4a73ee4da660c3341486324fcea51bb620af1e5a85de16",
    "treated-control.yaml": "106e62803a18774b8dfa051439c13bade1ea2ca70c316437ce87fa94731713a4",
    "unit-free-2.yaml": "abfa43bfb74b32fc9684b54eefbe3842a013c8c7b2b60635dddfb28c68caace0",
    "unit-free-3.yaml": "15b38eecb336b9db4624f663ea85243949ba21bd45833fd0e8150f8a7b513f1f",
    "unit-free.yaml": "2fc4d7abf55b6d17a1c56bfc6a29b52fb20c7527f07b853b253104cf5d76f8e3",
}


def _spec(**changes) -> PriorSpec:
    d = copy.deepcopy(HURDLE)
    for key, value in changes.items():
        d[key] = value
    return PriorSpec.from_dict(d)


def _known_task() -> HurdleLogNormalEnvironment:
    """A smooth one-covariate task in the prior's support: the arms' sds cross at x = 1/2."""
    return HurdleLogNormalEnvironment(
        "known",
        p=(lambda u: expit(-1.0 + u[..., 0]), lambda u: expit(-0.5 + 0.0 * u[..., 0])),
        m=(lambda u: 3.0 + 0.5 * u[..., 0],) * 2,
        s=(lambda u: 1.2 - 0.8 * u[..., 0], lambda u: 0.4 + 0.8 * u[..., 0]),
    )


def _experiment(env, n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = env.sample_covariates(rng, n)
    a = (rng.uniform(size=n) < 0.5).astype(float)
    y = np.where(a == 1, env.sample_outcomes(rng, x, 1), env.sample_outcomes(rng, x, 0))
    return x, a, y


# ------------------------------------------------------------------------- moments


@pytest.mark.parametrize("p, m, s", [(0.3, 3.5, 0.8), (0.9, 0.0, 0.3), (0.05, 1.0, 1.2)])
def test_implied_moments_match_monte_carlo(p, m, s):
    rng = np.random.default_rng(0)
    n = 2_000_000
    y = np.where(rng.uniform(size=n) < p, np.exp(m + s * rng.standard_normal(n)), 0.0)
    mean, sd = hurdle_lognormal_moments(p, m, s)
    assert mean == pytest.approx(y.mean(), abs=4 * y.std() / np.sqrt(n))
    # the sd of a sample sd: sqrt(E(y - mu)^4 - sd^4) / (2 sd sqrt(n)); four of those, or 1%
    fourth = np.mean((y - y.mean()) ** 4)
    assert sd == pytest.approx(y.std(), abs=max(4 * np.sqrt(fourth - y.var() ** 2) / (2 * y.std() * np.sqrt(n)),
                                                0.01 * sd))
    jm, jsd = hurdle_lognormal_moments(jnp.float32(p), jnp.float32(m), jnp.float32(s))
    assert isinstance(jm, jax.Array) and float(jm) == pytest.approx(mean, rel=1e-5)
    assert float(jsd) == pytest.approx(sd, rel=1e-5)


# ------------------------------------------------------------------------- prior files


def test_hurdle_prior_loads_and_names_its_series():
    spec = load_prior("revenue-hurdle")
    assert spec.family == "hurdle_lognormal" and spec.parts == ("purchase", "log_amount", "log_amount_sd")
    assert spec.series(1, "log_amount").offset == 3.5 and spec.bounds[1].tolist() == [365.0, 50.0]
    with pytest.raises(ValueError, match="has no mean series"):
        spec.series(0, "mean")


def test_shipped_prior_hashes_unchanged():
    got = {name: load_prior(name).hash() for name in list_priors() if name in SHIPPED_HASHES}
    assert got == SHIPPED_HASHES
    folder = Path(__file__).resolve().parents[1] / "bayesdesign" / "pretrained"
    configs = sorted(folder.glob("*/config.json"))
    assert configs
    for path in configs:
        cfg = json.loads(path.read_text())
        assert PriorSpec.from_dict(cfg["prior"]).hash() == cfg["prior_hash"], path


@pytest.mark.parametrize(
    "mutate, field, fragment",
    [
        (lambda d: d["arms"]["shared"].pop("log_amount_sd"), "arms.shared.log_amount_sd",
         "required for family hurdle_lognormal"),
        (lambda d: d["arms"]["shared"].update(mean={}), "arms.shared.mean",
         "not allowed with family hurdle_lognormal"),
        (lambda d: d["outcome"].update(family="gaussian"), "arms.shared.mean", "required field is missing"),
        (lambda d: d["outcome"].update(standardize=True), "outcome.standardize", "not supported"),
        (lambda d: d["arms"]["shared"]["purchase"].update(scael=1.0), "arms.shared.purchase.scael",
         "did you mean 'scale'"),
        (lambda d: d["arms"]["shared"]["log_amount"].update(scale=0), "arms.shared.log_amount.scale",
         "expected a positive number"),
    ],
)
def test_bad_hurdle_prior_names_file_and_field(tmp_path, mutate, field, fragment):
    d = copy.deepcopy(HURDLE)
    mutate(d)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(PriorSpecError) as info:
        load_prior(path)
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"{path}: {field}: ") and fragment in first, first


def test_gaussian_prior_refuses_hurdle_series():
    d = {**copy.deepcopy(HURDLE), "outcome": {"family": "gaussian"}}
    d["arms"]["shared"] = {"mean": {}, "log_sd": {}, "purchase": {}}
    with pytest.raises(PriorSpecError, match=r"arms.shared.purchase: not allowed with family gaussian"):
        PriorSpec.from_dict(d)


# ------------------------------------------------------------------------- tasks and model


def test_task_outcomes_match_implied_moments():
    """Tasks from a prior in user units (days on [0, 365]): at fixed covariates, 200,000 outcomes
    per task have the mean and sd the task reports."""
    d = copy.deepcopy(HURDLE)
    d["covariates"] = [{"name": "days", "low": 0.0, "high": 365.0}]
    d["arms"]["shared"]["log_amount_sd"]["scale"] = 0.2  # tame tails: a sample sd converges
    spec = PriorSpec.from_dict(d)
    env, _ = sample_tasks(spec, np.random.default_rng(3), 4)
    rng = np.random.default_rng(4)
    n = 200_000
    for arm in (0, 1):
        x = np.broadcast_to(np.array([[[30.0]], [[120.0]], [[200.0]], [[350.0]]]), (4, n, 1))
        y = env.sample_outcomes(rng, x, arm)
        mean, sd = env.mean(x[:, :1], arm)[:, 0], env.sd(x[:, :1], arm)[:, 0]
        np.testing.assert_allclose(y.mean(1), mean, atol=0, rtol=4 * (y.std(1) / np.sqrt(n) / mean).max())
        np.testing.assert_allclose(y.std(1), sd, rtol=0.03)
        assert np.all((y == 0).mean(1) > 0.2)  # a hurdle: zeros for non-buyers


def test_task_ate_is_the_mean_difference_by_monte_carlo():
    env, _ = sample_tasks(_spec(), np.random.default_rng(5), 3)
    u = np.random.default_rng(6).uniform(size=(3, 200_000, 1))
    np.testing.assert_allclose(env.ate, (env.mean(u, 1) - env.mean(u, 0)).mean(1), rtol=0.01)


def test_numpyro_model_likelihood_is_the_hurdle_density():
    spec = _spec()
    model = numpyro_model(spec)
    rng = np.random.default_rng(0)
    n = 40
    x = rng.uniform(size=(n, 1))
    a = (np.arange(n) % 2).astype(np.int32)
    y = np.where(rng.uniform(size=n) < 0.4, np.exp(3 + rng.standard_normal(n)), 0.0)
    args = (jnp.asarray(x, jnp.float32), jnp.asarray(a), jnp.asarray(y, jnp.float32), jnp.ones(n, bool),
            jnp.asarray(x[:3], jnp.float32))
    tr = handlers.trace(handlers.seed(model, 1)).get_trace(*args)
    latent = {k: v["value"] for k, v in tr.items() if v["type"] == "sample" and not v["is_observed"]}
    assert sorted(latent) == ["z_log_amount", "z_log_amount_sd", "z_purchase"]
    total, _ = log_density(model, args, {}, latent)
    prior = sum(float(stats.norm.logpdf(np.asarray(v)).sum()) for v in latent.values())
    th = {k: np.asarray(tr[f"theta_{k}"]["value"], float) for k in ("purchase", "log_amount", "log_amount_sd")}
    phi = np.concatenate([np.ones((n, 1)), np.sqrt(2) * np.cos(np.pi * x * np.arange(1, 7))], axis=1)
    f = {k: np.sum(phi * v[a], axis=1) for k, v in th.items()}
    p, m, s = expit(f["purchase"]), f["log_amount"], np.exp(f["log_amount_sd"])
    lik = np.where(y > 0, np.log(p) + stats.lognorm.logpdf(np.where(y > 0, y, 1), s, scale=np.exp(m)), np.log1p(-p))
    assert float(total) - prior == pytest.approx(lik.sum(), rel=1e-4)
    mean, sd = (np.asarray(tr[k]["value"]) for k in ("mean", "sd"))
    phq = phi[:3]
    q = {k: v @ phq.T for k, v in th.items()}
    want = hurdle_lognormal_moments(expit(q["purchase"]), q["log_amount"], np.exp(q["log_amount_sd"]))
    np.testing.assert_allclose(mean, want[0], rtol=1e-4)
    np.testing.assert_allclose(sd, want[1], rtol=1e-4)


# ------------------------------------------------------------------------- the conjugate teacher


@pytest.fixture(scope="module")
def big_sample():
    return _experiment(_known_task(), 40_000, seed=0)


@pytest.mark.parametrize("mixture", [False, True])
def test_conjugate_teacher_recovers_the_true_neyman_rule(big_sample, mixture):
    """On a large uniform sample from a known task the posterior sds approach the true
    sigma_a(x) and pi the true Neyman ratio sigma_1 / (sigma_1 + sigma_0); the error shrinks from
    2,000 to 40,000 units."""
    env = _known_task()
    spec = _spec(smoothness={"choices": [0.5, 1.0, 2.0]}) if mixture else _spec()
    teacher = make_teacher("mixture" if mixture else "conjugate", spec)
    assert isinstance(teacher, HurdleConjugateTeacher)
    xq = np.linspace(0.05, 0.95, 7)[:, None]
    true_sd = np.stack([env.sd(xq, 0), env.sd(xq, 1)])
    true_pi = true_sd[1] / true_sd.sum(0)
    x, a, y = big_sample
    errs = []
    for n in (2_000, 40_000):
        out = teacher.decide(teacher.fold(History(x[:n], a[:n], y[:n], np.full(n, 0.5)))[0], xq[None])
        errs.append((np.abs(out["pi"][0] - true_pi).max(), np.abs(np.log(out["sbar"][0] / true_sd)).max()))
    (pi_small, sd_small), (pi_big, sd_big) = errs
    assert pi_big < 0.03 and sd_big < 0.1, errs
    assert pi_big < pi_small and sd_big < sd_small, errs
    assert np.isclose(out["class_prob"].sum(), 1.0)


def test_rule_quadrature_matches_monte_carlo_posterior():
    """The decision's E[sigma_a(x) | H] (product Gauss-Hermite, independence of m and s^2) against
    the posterior's draws of the three functions pushed through the moment formula."""
    env = _known_task()
    x, a, y = _experiment(env, 600, seed=1)
    teacher = make_teacher("conjugate", _spec())
    h = History(x, a, y, np.full(len(y), 0.5))
    xq = np.array([[0.1], [0.5], [0.9]])
    sbar = teacher.decide(teacher.fold(h)[0], xq[None])["sbar"][0]
    post = teacher.posterior(h, xq, draws=20_000, seed=0).posterior["sd"].values[0]
    np.testing.assert_allclose(post.mean(0), sbar, rtol=0.04)


def test_teacher_refuses_negative_outcomes():
    teacher = make_teacher("conjugate", _spec())
    h = History(np.array([[0.2], [0.4]]), np.array([1.0, 0.0]), np.array([3.0, -1.0]), np.full(2, 0.5))
    with pytest.raises(ValueError, match=r"y: .*needs finite outcomes >= 0, got -1.0"):
        teacher.propensity(h, np.array([[0.5]]))


def test_incremental_updates_match_the_folded_history():
    """The runner's path (state updated unit batch by unit batch, in float64 sums) gives the same
    decision as one fold of the whole history, zeros and buyers in both arms."""
    x, a, y = _experiment(_known_task(), 300, seed=2)
    teacher = make_teacher("conjugate", _spec())
    state = teacher.init(1)
    for s in range(0, 300, 7):
        sl = slice(s, s + 7)
        state = teacher.update(state, x[None, sl], a[None, sl], y[None, sl], None)
    xq = np.array([[[0.3], [0.8]]])
    folded = teacher.decide(teacher.fold(History(x, a, y, np.full(300, 0.5)))[0], xq)
    stepped = teacher.decide(state, xq)
    np.testing.assert_allclose(stepped["pi"], folded["pi"], rtol=1e-5)
    assert state.t == 300 and state.buy.count.sum() == 300
    assert state.stats.count.sum() == (y > 0).sum() > 0


def test_plain_conjugate_teacher_refuses_a_hurdle_prior():
    """The Gaussian working model is not the hurdle's: the base class refuses, the factory chooses."""
    with pytest.raises(ValueError, match="has its own conjugate teacher: use make_teacher"):
        ConjugateTeacher(_spec())
    assert isinstance(make_teacher("conjugate", _spec()), HurdleConjugateTeacher)
