"""Priors that need not know the outcome's units (``outcome.standardize``), the safe and log-odds
rules, the rule for outcomes with an atom, the kurtosis-robust variance regression of the
conjugate teachers, and wide log-sd priors."""

import numpy as np
import pytest

import bayesdesign as bd
from bayesdesign.design import make_design, simulate
from bayesdesign.design.registry import split_suffixes
from bayesdesign.efficiency import extremes_init, extremes_update, has_atom, log_odds_settings
from bayesdesign.regression import init_stats, update_stats
from bayesdesign.spec import PriorSpec, PriorSpecError, load_prior
from bayesdesign.teachers import TeacherConfig, make_teacher
from bayesdesign.teachers.base import VARIANCE_LAWS
from bayesdesign.teachers.conjugate import TeacherState, _centred, safe_rule, standardized_state


def _spec(low=0.0, high=1.0, **outcome):
    d = load_prior("unit-free").to_dict()
    d["covariates"] = [{"name": "x", "low": low, "high": high}]
    d["outcome"].update(outcome)
    return PriorSpec.from_dict(d)


def test_standardized_statistics_are_those_of_the_standardized_outcomes(rng):
    n = 60
    phi = rng.normal(size=(2, n, 4))
    phi[..., 0] = 1.0  # the intercept feature, as in every cosine basis
    a = rng.integers(0, 2, (2, n)).astype(float)
    y = 500.0 + 40.0 * rng.standard_normal((2, n)) ** 3
    w = np.stack([1 - a, a], 1)
    state = TeacherState(
        n, update_stats(init_stats(2, 4), phi, a, y), (w * y[:, None] ** 3).sum(-1), (w * y[:, None] ** 4).sum(-1)
    )
    got, c, s = standardized_state(state)
    z = (y - y.mean(-1, keepdims=True)) / y.std(-1, keepdims=True)
    want = update_stats(init_stats(2, 4), phi, a, z)
    np.testing.assert_allclose(got.stats.b1, want.b1, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.stats.b2, want.b2, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.m3, (w * z[:, None] ** 3).sum(-1), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(got.m4, (w * z[:, None] ** 4).sum(-1), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(c, y.mean(-1)) and np.testing.assert_allclose(s, y.std(-1))


def test_standardizing_teacher_ignores_the_outcome_and_covariate_units():
    """y -> 1000 + 25 y and x on [10, 50] with a prior declaring [10, 50]: the same design."""
    env = bd.get_scenario("S2")
    moved = bd.rescale(env, [10.0], [50.0], shift=1000.0, scale=25.0)
    base = simulate(env, [make_teacher("mixture", _spec())], horizon=200, reps=3, seed=1)
    other = simulate(moved, [make_teacher("mixture", _spec(10.0, 50.0))], horizon=200, reps=3, seed=1)
    np.testing.assert_allclose(other.pi.sel(design="teacher:mixture"), base.pi.sel(design="teacher:mixture"), atol=2e-5)
    assert float(np.abs(base.pi.sel(design="teacher:mixture")[:, 50:] - 0.5).mean()) > 0.05  # it adapts
    # the prior stated in unit-free terms: without standardizing, the shift and scale change the design
    plain = simulate(moved, [make_teacher("mixture", _spec(10.0, 50.0, standardize=False))], 200, 3, seed=1)
    assert float(np.abs(plain.pi.sel(design="teacher:mixture") - base.pi.sel(design="teacher:mixture")).max()) > 0.05


def test_standardize_is_checked():
    with pytest.raises(PriorSpecError, match="outcome.standardize: bernoulli outcomes have no units"):
        PriorSpec.from_dict({**load_prior("binary").to_dict(), "outcome": {"family": "bernoulli", "standardize": True}})
    with pytest.raises(ValueError, match="supported by the conjugate and mixture teachers only, not 'nuts'"):
        make_teacher("nuts", "unit-free")
    with pytest.raises(ValueError, match="safe: expected a non-negative number"):
        TeacherConfig(safe=-1.0)
    with pytest.raises(ValueError, match=r"rule: expected one of \['sd', 'log_sd'\], got 'median'"):
        TeacherConfig(rule="median")
    with pytest.raises(ValueError, match="variance_law settings are supported by the conjugate and mixture"):
        make_teacher("svi", "beta1", TeacherConfig(rule="log_sd"))
    with pytest.raises(ValueError, match=r"variance_law settings .* \(its default is the 'sd' rule"):
        make_teacher("svi", "beta1", TeacherConfig())  # the closed-form teachers' default is not theirs
    assert make_teacher("svi", "beta1").config.rule == "sd"
    with pytest.raises(ValueError, match=r"spike: expected a prior probability in \[0, 1\), got 1.0"):
        TeacherConfig(spike=1.0)


def test_design_name_suffixes():
    assert split_suffixes("unit-free") == ("unit-free", {})
    assert split_suffixes("unit-free:safe") == ("unit-free", {"safe": 0.5, "robust": True, "spike": 0.0})
    assert split_suffixes("priors/x.yaml:safe:log-odds") == ("priors/x.yaml", {"safe": 0.5, "robust": True,
                                                                                "rule": "log_sd", "spike": 0.0})
    assert split_suffixes("unit-free:sd") == ("unit-free", {"rule": "sd", "spike": 0.0})
    assert split_suffixes("C:/priors/x.yaml") == ("C:/priors/x.yaml", {})  # only known suffixes are taken
    named = bd.make_design("teacher:mixture:unit-free:log-odds", bd.get_scenario("S2"), 100)
    assert named.config == TeacherConfig(rule="log_sd", spike=0.0)


def test_log_odds_rule_weighs_down_the_arm_whose_sd_is_uncertain(rng):
    """Equal true sds, 200 control units and 12 treated: the posterior of sigma_1 is the wider, so
    exp E log sigma_1 falls further below E sigma_1 than for arm 0 (Jensen), and the log-odds rule
    treats less than the sd rule, at every query."""
    x = rng.uniform(size=(1, 212, 1))
    a = np.r_[np.zeros(200), np.ones(12)][None]
    y = rng.normal(size=(1, 212))
    rules = {}
    for rule in ("sd", "log_sd"):
        t = make_teacher("mixture", "unit-free", TeacherConfig(rule=rule, spike=0.0))
        rules[rule] = t.decide(t.update(t.init(1), x, a, y, None), np.linspace(0.05, 0.95, 7)[None, :, None])
    sd, log_sd = rules["sd"], rules["log_sd"]
    np.testing.assert_allclose(sd["sbar"], log_sd["sbar"])  # one posterior, two summaries of it
    assert (sd["log_sd_sd"][0, 1] > 1.5 * sd["log_sd_sd"][0, 0]).all()
    assert (log_sd["pi"] < sd["pi"] - 0.005).all()


def test_wide_log_sd_prior_keeps_a_finite_design(tmp_path, rng):
    """A log-sd scale of 1.5 made the delta-method scale of the second moment e^11 times the
    typical variance; the float32 solve then returned NaN and the run stopped at unit 10."""
    d = load_prior("unit-free").to_dict()
    d["arms"]["shared"]["log_sd"]["scale"] = 1.5
    ds = simulate(bd.get_scenario("S10"), [make_teacher("mixture", PriorSpec.from_dict(d))], horizon=60, reps=4, seed=0)
    pi = ds.pi.sel(design="teacher:mixture").values
    assert np.isfinite(pi).all() and (np.abs(pi[:, 30:] - 0.5) > 0.05).any()


def test_safe_rule_stays_at_one_half_unless_the_posterior_separates_the_sds():
    m = np.array([[[0.0, 0.0, 0.0]], [[0.2, 1.0, -1.0]]]).transpose(1, 0, 2)  # (1, arm, Q): log sd means
    s = np.full_like(m, 0.3)  # posterior sd of each log sd: sd of the difference 0.424
    pi = safe_rule(m, s, k=1.0)[0]
    assert pi[0] == 0.5  # difference 0.2 < 0.424
    np.testing.assert_allclose(
        pi[1:], [1 / (1 + np.exp(-(1.0 - 0.3 * np.sqrt(2)))), 1 / (1 + np.exp(1.0 - 0.3 * np.sqrt(2)))]
    )
    np.testing.assert_allclose(safe_rule(m, s, k=0.0)[0], 1 / (1 + np.exp(-m[0, 1])))


def test_safe_teacher_on_equal_sds_keeps_one_half_and_still_learns_unequal_ones(rng):
    safe = make_teacher("mixture", "unit-free", TeacherConfig(safe=0.5, robust=True, spike=0.0))
    plain = make_teacher("mixture", "unit-free", TeacherConfig(rule="sd", spike=0.0))
    xq = np.linspace(0.05, 0.95, 10)[:, None]
    dev = {}
    for name, env in (("S1", bd.get_scenario("S1")), ("S2", bd.get_scenario("S2"))):
        x = env.sample_covariates(rng, 300)
        a = rng.integers(0, 2, 300)
        h = bd.History(x, a.astype(float), env.sample_outcomes(rng, x, a), np.full(300, 0.5))
        dev[name] = [np.abs(t.propensity(h, xq) - 0.5).mean() for t in (safe, plain)]
        if name == "S2":
            target = env.sd(xq, 1) / (env.sd(xq, 1) + env.sd(xq, 0))
            assert np.corrcoef(safe.propensity(h, xq), target)[0, 1] > 0.9
    assert dev["S1"][0] < 0.5 * dev["S1"][1]  # the plain teacher chases noise on S1
    state, _ = safe.fold(bd.History(*(v[None] for v in h)))
    out = safe.decide(state, xq[None])  # what traces record is the rule the design follows
    np.testing.assert_allclose(out["pi"], safe_rule(out["log_sd_mean"], out["log_sd_sd"], 0.5))
    np.testing.assert_allclose(safe.propensity(h, xq), safe.clip.clip(out["pi"][0], 301), rtol=1e-6)
    assert dev["S2"][0] > 0.1


def test_stored_configurations_keep_the_rule_they_were_made_with():
    """A configuration stored before 'rule' and 'spike' existed reads as the sd rule it was made
    with, not as today's default; today's round-trips."""
    old = {"burn_in": 10, "clip": {"eps_min": 0.02, "power": 1 / 3, "scale": 0.5}, "floor": 0.05,
           "prior_obs": 5.0, "robust": False, "safe": 0.0}
    cfg = TeacherConfig.from_dict(old)
    assert (cfg.rule, cfg.spike, cfg.atom) == ("sd", 0.0, 0.0) and cfg != TeacherConfig()
    assert TeacherConfig.from_dict(TeacherConfig().to_dict()) == TeacherConfig()
    assert log_odds_settings(old) == (-1.0, 0.0) and log_odds_settings(TeacherConfig()) == (0.0, 0.3)


def test_spike_rule_is_the_posterior_mean_under_a_spike_and_slab_prior():
    """Savage-Dickey against Bayes' rule written out: a prior rho * delta_0 + (1 - rho) N(0, s0^2)
    on the log-odds and a Gaussian likelihood N(l; delta, v) whose slab posterior is N(m, s^2)."""
    rho, s0 = 0.3, 1.4
    for lik, v in ((0.1, 0.2), (0.8, 0.2), (2.0, 0.5), (-1.5, 1.0), (0.3, 5.0)):
        s2 = 1 / (1 / s0**2 + 1 / v)
        m = s2 * lik / v
        norm = lambda z, var: np.exp(-0.5 * z**2 / var) / np.sqrt(2 * np.pi * var)  # noqa: E731
        p0 = rho * norm(lik, v) / (rho * norm(lik, v) + (1 - rho) * norm(lik, s0**2 + v))
        mean = np.array([[[0.0], [m]]])  # (1, arm, Q): arm 0 known, arm 1 carries the log-odds
        sd = np.array([[[0.0], [np.sqrt(s2)]]])
        np.testing.assert_allclose(safe_rule(mean, sd, 0.0, rho, s0)[0, 0], 1 / (1 + np.exp(-(1 - p0) * m)))
    np.testing.assert_allclose(safe_rule(mean, sd, 0.0, 0.0, s0), safe_rule(mean, sd, 0.0))  # no spike


def test_spike_teacher_stays_nearer_one_half_on_equal_sds_only(rng):
    """The default teacher (spike 0.3) against the log-odds rule without the spike: on S1 (equal
    sds) it deviates from 1/2 far less; on S2 (sds apart by e^2) it follows the Neyman rule as
    closely; its probabilities are the rule applied to its posterior."""
    spike = make_teacher("mixture", "unit-free")
    assert spike.config.spike == 0.3 and spike.config.rule == "log_sd"
    plain = make_teacher("mixture", "unit-free", TeacherConfig(rule="log_sd", spike=0.0))
    xq = np.linspace(0.05, 0.95, 10)[:, None]
    dev = {}
    for name in ("S1", "S2"):
        env = bd.get_scenario(name)
        x = env.sample_covariates(rng, 300)
        a = rng.integers(0, 2, 300)
        h = bd.History(x, a.astype(float), env.sample_outcomes(rng, x, a), np.full(300, 0.5))
        dev[name] = [t.propensity(h, xq) for t in (spike, plain)]
        target = env.sd(xq, 1) / (env.sd(xq, 1) + env.sd(xq, 0))
        err = [np.abs(p - target).mean() for p in dev[name]]
    assert np.abs(dev["S1"][0] - 0.5).mean() < 0.75 * np.abs(dev["S1"][1] - 0.5).mean()
    assert err[0] < err[1] + 0.03 and np.corrcoef(dev["S2"][0], target)[0, 1] > 0.95
    state, _ = spike.fold(bd.History(*(v[None] for v in h)))
    out = spike.decide(state, xq[None])
    np.testing.assert_allclose(out["pi"], safe_rule(out["log_sd_mean"], out["log_sd_sd"], 0.0, 0.3, spike.slab))
    assert 1.0 < spike.slab < 2.0  # the unit-free prior's log-sd scale 0.7 per arm, at a point


def test_robust_variance_regression_uses_the_kurtosis(rng):
    spec = load_prior("unit-free")
    teacher = make_teacher("mixture", spec)
    for draw, kurt in ((rng.standard_normal, 3.0), (lambda n: rng.lognormal(0.0, 1.0, n), None)):
        y = draw(20_000)
        a = np.tile([0.0, 1.0], 10_000)
        state = teacher.init(1)
        state = teacher.update(state, np.full((1, 20_000, 1), 0.5), a[None], y[None], np.full((1, 20_000), 0.5))
        view, _, _ = standardized_state(state)
        plain = _centred(teacher.prior, view, 5.0, robust=False)[-1]
        robust = _centred(teacher.prior, view, 5.0, robust=True)[-1]
        np.testing.assert_allclose(
            np.asarray(plain), 2.0 * np.asarray(_centred(teacher.prior, view, 5.0)[7]) ** 2, rtol=1e-5
        )
        if kurt:  # Gaussian: the same as the Gaussian working likelihood
            np.testing.assert_allclose(np.asarray(robust), np.asarray(plain), rtol=0.1)
        else:  # lognormal(0, 1): kurtosis e^4 + 2e^3 + 3e^2 - 3, about 111
            assert np.all(np.asarray(robust) > 5 * np.asarray(plain))  # sample kurtosis > 11


def test_safe_design_name():
    ds = simulate(bd.get_scenario("S1"), ["teacher:mixture:unit-free:safe"], horizon=100, reps=2, seed=0)
    assert "teacher:mixture:unit-free:safe" in list(ds.design.values)


def _s2_history(rng, n: int = 400):
    """S2 units under complete randomization, the unit-free mixture teacher and two queries."""
    env = bd.get_scenario("S2")
    x = env.sample_covariates(rng, n)
    a = rng.integers(0, 2, n).astype(float)
    return env, x, a, env.sample_outcomes(rng, x, a), make_teacher("mixture", "unit-free"), np.array([[0.2], [0.8]])


def test_standardizing_teacher_posterior_is_in_the_outcome_units(rng):
    env, x, a, y, teacher, xq = _s2_history(rng)
    out = []
    for yy in (y, 1000 + 25 * y):
        state, _ = teacher.fold(bd.History(x[None], a[None], yy[None], np.full((1, 400), 0.5)))
        out.append(teacher.decide(state, xq[None]))
    np.testing.assert_allclose(out[1]["mean"], 1000 + 25 * out[0]["mean"], rtol=1e-5)
    np.testing.assert_allclose(out[1]["sbar"], 25 * out[0]["sbar"], rtol=1e-4)
    np.testing.assert_allclose(out[1]["log_sd_mean"], np.log(25) + out[0]["log_sd_mean"], atol=1e-4)
    np.testing.assert_allclose(out[0]["sbar"][0], [env.sd(xq, 0), env.sd(xq, 1)], rtol=0.35)  # learned S2's sds


@pytest.mark.slow
def test_standardizing_teacher_posterior_draws_are_in_the_outcome_units(rng):
    _, x, a, y, teacher, xq = _s2_history(rng)
    base = teacher.posterior(bd.History(x, a, y, np.full(400, 0.5)), xq, draws=300, seed=3)
    moved = teacher.posterior(bd.History(x, a, 1000 + 25 * y, np.full(400, 0.5)), xq, draws=300, seed=3)
    np.testing.assert_allclose(moved.posterior["mean"], 1000 + 25 * base.posterior["mean"], rtol=1e-4)
    np.testing.assert_allclose(moved.posterior["sd"], 25 * base.posterior["sd"], rtol=1e-4)


def test_running_extremes_count_ties_as_a_direct_count(rng):
    """Blocks of outcomes with ties (and NaN padding) against the extremes of the whole history."""
    y = rng.choice([0.0, 1.5, 2.0, 7.25], size=(6, 90), p=[0.5, 0.2, 0.2, 0.1])
    y[0] = rng.normal(size=90)  # continuous: each extreme once
    y[1, :40] = 3.0  # the minimum moves after the first block
    ext = extremes_init(6)
    for lo, hi in ((0, 1), (1, 40), (40, 41), (41, 90)):
        block = np.concatenate([y[:, lo:hi], np.full((6, 3), np.nan)], 1)
        ext = extremes_update(ext, block)
    np.testing.assert_array_equal(ext[:, 0], y.min(1))
    np.testing.assert_array_equal(ext[:, 2], y.max(1))
    np.testing.assert_array_equal(ext[:, 1], (y == y.min(1)[:, None]).sum(1))
    np.testing.assert_array_equal(ext[:, 3], (y == y.max(1)[:, None]).sum(1))
    atom = has_atom(ext, 90, 0.2)
    assert not atom[0] and atom[1:].all()
    flipped = extremes_update(extremes_init(6), 4.0 - 3.0 * y)  # y -> c + s y, s < 0: min and max swap
    np.testing.assert_array_equal(has_atom(flipped, 90, 0.2), atom)
    assert not has_atom(ext, 90, 0.0).any()  # share 0: off


def _revenue(rng, b=4, n=300):
    """S8's data under complete randomization, and the same outcomes with the zeros jittered."""
    env = bd.get_scenario("S8")
    x = env.sample_covariates(rng, b * n).reshape(b, n, 2)
    a = (rng.uniform(size=(b, n)) < 0.5).astype(float)
    y = env.sample_outcomes(rng, x, a)
    return x, a, y, y + np.where(y == 0, 1e-3 * rng.uniform(size=y.shape), 0.0), x[:, :8]


def test_atom_rule_is_the_robust_safe_rule_where_outcomes_have_an_atom(rng):
    """On zero-heavy revenue the default teacher decides as the robust variance with the safe
    rule 0.5 on top of the spike; on the same outcomes with the zeros jittered (no exact tie) as the
    default without the atom share; in dollars or cents alike; and the atom rule matters here."""
    x, a, y, jittered, xq = _revenue(rng)
    teachers = {
        name: make_teacher("mixture", "checkout", cfg)
        for name, cfg in (("default", None), ("off", TeacherConfig(atom=0.0)),
                          ("robust-safe", TeacherConfig(atom=0.0, robust=True, safe=0.5)))
    }

    def pi(name, yy):
        t = teachers[name]
        out = t.decide(t.update(t.init(len(yy)), x, a, yy, None), xq)
        return out["pi"], out["atom"]

    got, atom = pi("default", y)
    assert atom.all()
    np.testing.assert_allclose(got, pi("robust-safe", y)[0], atol=1e-12)
    np.testing.assert_allclose(pi("default", 5.0 + 100.0 * y)[0], got, atol=1e-6)  # cents, shifted
    assert np.abs(got - pi("off", y)[0]).max() > 0.05
    cont, atom = pi("default", jittered)
    assert not atom.any()
    np.testing.assert_allclose(cont, pi("off", jittered)[0], atol=1e-12)
    assert np.abs(got - 0.5).max() < np.abs(pi("off", y)[0] - 0.5).max()  # nearer 1/2 with the atom


def test_lognormal_law_keeps_the_moments_and_yields_to_the_atom_rule(rng):
    """``variance_nodes``: both laws have the working posterior's mean and variance of sigma^2
    (away from the floor); the lognormal law gives a small, uncertain variance a smaller posterior
    mean sd. The teacher with ``variance_law='lognormal'`` decides as the normal one where the
    atom rule fires (zero-heavy revenue) and differs on the same outcomes jittered."""
    import jax.numpy as jnp

    from bayesdesign.teachers.conjugate import _GH_W, variance_nodes

    w = np.asarray(_GH_W, float)
    var, var_var = np.array([2.0, 0.5]), np.array([0.3, 0.04])
    for law in (0.0, 1.0):
        v = np.asarray(variance_nodes(jnp.asarray(var), jnp.asarray(var_var), 1e-6, law), float)
        mean = v @ w
        np.testing.assert_allclose(mean, var, rtol=2e-3)
        np.testing.assert_allclose((v - mean[:, None]) ** 2 @ w, var_var, rtol=2e-2)
    small = [np.asarray(variance_nodes(jnp.asarray([0.02]), jnp.asarray([0.01]), 1e-6, law), float)
             for law in (0.0, 1.0)]
    sd_normal, sd_lognormal = (float((np.sqrt(v) @ w)[0]) for v in small)
    tau2 = np.log1p(0.01 / 0.02**2)  # E sigma = exp(mu / 2 + tau^2 / 8), mu = log m - tau^2 / 2
    assert sd_lognormal == pytest.approx(np.exp(0.5 * (np.log(0.02) - tau2 / 2) + tau2 / 8), rel=0.02)
    z = np.linspace(-8, 8, 20001)
    dens = np.exp(-z**2 / 2) / np.sqrt(2 * np.pi)
    ref = np.trapezoid(np.sqrt(np.maximum(0.02 + 0.1 * z, 1e-6)) * dens, z)
    assert sd_normal == pytest.approx(ref, rel=0.05)  # 20 nodes across the kink at the floor
    assert sd_lognormal < 0.7 * sd_normal

    x, a, y, jittered, xq = _revenue(rng)
    teachers = [make_teacher("mixture", "checkout", TeacherConfig(variance_law=law)) for law in VARIANCE_LAWS]

    def pi(t, yy):
        out = t.decide(t.update(t.init(len(yy)), x, a, yy, None), xq)
        return out["pi"], out["atom"]

    (p0, atom), (p1, _) = (pi(t, y) for t in teachers)
    assert atom.all()
    np.testing.assert_allclose(p1, p0, atol=1e-12)
    (q0, atom), (q1, _) = (pi(t, jittered) for t in teachers)
    assert not atom.any() and np.abs(q1 - q0).max() > 0.01


def test_lognormal_law_is_refused_where_it_is_not_implemented(tmp_path):
    with pytest.raises(ValueError, match="variance_law"):
        TeacherConfig(variance_law="gamma")
    with pytest.raises(ValueError, match="variance_law.*hurdle_lognormal"):
        make_teacher("conjugate", "revenue-hurdle", TeacherConfig(variance_law="lognormal"))
    with pytest.raises(ValueError, match="variance_law"):
        make_teacher("nuts", "beta1", TeacherConfig(rule="sd", spike=0.0, variance_law="lognormal"))
    env = bd.get_scenario("S1")
    with pytest.raises(ValueError, match=r"variance_law: expected one of \['normal', 'lognormal'\], got 'gamma'"):
        make_design("student:pretrained:lognormal", env, horizon=10).student.model.conj.set_rule(
            {"variance_law": "gamma"})
