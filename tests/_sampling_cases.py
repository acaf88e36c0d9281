"""Cases shared by the NUTS and SVI teacher tests: S2 histories and the known-variance mean model
with its closed-form (float64) posterior."""

import numpy as np

import bayesdesign as bd
from bayesdesign.basis import cosine_features, prior_scales
from bayesdesign.spec import PriorSpec

SIGMA = np.array([0.5, 1.0])


def s2_history(seed, n, batch=None):
    """``n`` units of S2 at pi = 1/2 (``batch`` independent histories if given)."""
    env = bd.get_scenario("S2")
    rng = np.random.default_rng(seed)
    m = n * (batch or 1)
    x = env.sample_covariates(rng, m)
    a = (rng.uniform(size=m) < 0.5).astype(int)
    y = env.sample_outcomes(rng, x, a)
    h = bd.History(x, a.astype(float), y, np.full(m, 0.5))
    if batch:
        h = bd.History(*(v.reshape(batch, n, *v.shape[1:]) for v in h))
    return h


def known_variance_case(tmp_path, monkeypatch, module: str, n: int = 60):
    """The known-variance model of ``beta1`` as a user model (so the generic path runs), and
    ``n`` units of data: returns ``(spec, history)``."""
    (tmp_path / f"{module}.py").write_text(
        "import numpy as np\nfrom bayesdesign.models import known_variance_model\n"
        "from bayesdesign.spec import load_prior\n"
        "model = known_variance_model(load_prior('beta1'), np.array([0.5, 1.0]))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = PriorSpec.from_dict(
        {"name": "kv", "covariates": [{"name": "x", "low": 0, "high": 1}], "model": f"{module}:model"}
    )
    rng = np.random.default_rng(11)
    x = rng.uniform(size=(n, 1))
    a = rng.integers(0, 2, n)
    y = np.sin(3 * x[:, 0]) + a + SIGMA[a] * rng.standard_normal(n)
    return spec, bd.History(x, a.astype(float), y, np.full(n, 0.5))


def known_variance_posterior(h, xq, arm):
    """Closed-form posterior mean and sd of mu_arm(xq): precision Phi^T Phi / sigma^2 + diag(s^-2)."""
    s = prior_scales(1, 10, 1.0, 1.0)
    phi_q = cosine_features(xq, 10)
    sel = h.a == arm
    phi = cosine_features(h.x[sel], 10)
    prec = phi.T @ phi / SIGMA[arm] ** 2 + np.diag(1.0 / s**2)
    coef = np.linalg.solve(prec, phi.T @ h.y[sel] / SIGMA[arm] ** 2)
    q_sd = np.sqrt(np.einsum("qf,fg,qg->q", phi_q, np.linalg.inv(prec), phi_q))
    return phi_q @ coef, q_sd
