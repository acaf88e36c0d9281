"""Prior files: schema, loading, hashing and error messages (file and field named)."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesdesign.design.scenarios import SeriesPriorTasks
from bayesdesign.spec import PriorSpec, PriorSpecError, list_priors, load_prior, shipped_prior_dir

REQUIRED = [
    "beta0.5.yaml", "beta1.yaml", "beta2.yaml", "beta4.yaml", "smoothness-mixture.yaml",
    "binary.yaml", "student-t.yaml",
]

BASE = {
    "name": "t",
    "covariates": [{"name": "x", "low": 0.0, "high": 1.0}],
    "outcome": {"family": "gaussian"},
    "arms": {"shared": {"mean": {"scale": 1.0}, "log_sd": {"scale": 0.5}}},
}


def _write(tmp_path: Path, data, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _error(path: Path) -> PriorSpecError:
    with pytest.raises(PriorSpecError) as info:
        load_prior(path)
    return info.value


# ----------------------------------------------------------------------------- shipped files


def test_required_priors_are_shipped_and_load():
    names = list_priors()
    for name in REQUIRED:
        assert name in names
    assert any(n.endswith(".toml") for n in names)
    for name in names:
        spec = load_prior(shipped_prior_dir() / name)
        assert spec.d >= 1 and len(spec.hash()) == 64


def test_beta1_is_scenario_s4():
    s4 = SeriesPriorTasks()
    spec = load_prior("beta1")
    assert spec.family == "gaussian" and spec.d == s4.d == 1
    np.testing.assert_array_equal(spec.bounds[0], s4.bounds[0])
    np.testing.assert_array_equal(spec.bounds[1], s4.bounds[1])
    for a in (0, 1):
        mean, log_sd = spec.arm(a).mean, spec.arm(a).log_sd
        assert (mean.beta, mean.terms, mean.scale, mean.offset) == (s4.beta, s4.n_terms, s4.mean_scale, 0)
        assert (log_sd.beta, log_sd.terms, log_sd.scale, log_sd.offset) == (
            s4.beta, s4.n_terms, s4.logsd_scale, 0)
    assert spec.classes == [None]
    np.testing.assert_array_equal(spec.weights, [1.0])


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 4.0])
def test_beta_files(beta):
    """The beta family differs from beta1 (= S4) only in beta."""
    spec = load_prior(f"beta{beta:g}")
    assert spec.name == f"beta{beta:g}"
    assert spec.arm(0).mean.beta == spec.arm(1).log_sd.beta == beta
    s4 = SeriesPriorTasks()
    assert spec.arm(0).mean.scale == s4.mean_scale and spec.arm(0).log_sd.scale == s4.logsd_scale
    assert spec.n_terms == 10


def test_yaml_and_toml_hashes_agree():
    y = load_prior("beta1.yaml")
    t = load_prior("beta1.toml")
    assert y.to_dict() == t.to_dict()
    assert y.hash() == t.hash()
    assert y.hash() != load_prior("beta2").hash()


def test_hash_ignores_layout_and_explicit_defaults(tmp_path):
    minimal = _write(tmp_path, textwrap.dedent("""
        arms:
          shared:
            log_sd: {scale: 0.5}
            mean: {}
        covariates: [{name: x, high: 1, low: 0}]
        name: t
    """), "minimal.yaml")
    explicit = _write(tmp_path, textwrap.dedent("""
        name = "t"
        [outcome]
        family = "gaussian"
        [[covariates]]
        name = "x"
        low = 0.0
        high = 1.0
        [arms.shared.mean]
        series = "cosine"
        terms = 10
        beta = 1.0
        scale = 1.0
        offset = 0.0
        [arms.shared.log_sd]
        scale = 0.5
    """), "explicit.toml")
    assert load_prior(minimal).hash() == load_prior(explicit).hash()


def test_name_lookup_and_source():
    assert load_prior("beta0.5").name == "beta0.5"  # the dot is not a suffix
    assert load_prior("smoothness-mixture").is_mixture
    assert load_prior("beta1").source.endswith("beta1.yaml")


def test_from_dict_roundtrip_and_accessors():
    spec = load_prior("treated-control")
    again = PriorSpec.from_dict(spec.to_dict(), source="<copy>")
    assert again.to_dict() == spec.to_dict() and again.hash() == spec.hash()
    assert again.source == "<copy>" and spec.source.endswith("treated-control.yaml")
    assert spec.arm(1) is spec.arms.treated and spec.arm(0) is spec.arms.control
    assert spec.arm(1).mean.offset == 0.5 and spec.arm(0).log_sd.offset == -0.5
    assert spec.n_terms == 10
    with pytest.raises(ValueError, match="arm"):
        spec.arm(2)
    binary = load_prior("binary")
    lo, hi = binary.bounds
    np.testing.assert_array_equal(lo, [18.0])
    np.testing.assert_array_equal(hi, [80.0])
    np.testing.assert_allclose(binary.to_unit(np.array([[18.0], [49.0], [80.0], [100.0]])),
                               [[0.0], [0.5], [1.0], [1.0]])
    assert binary.arm(0).log_sd is None
    assert load_prior("student-t").outcome.df == 3.0


def test_student_t_df_defaults_to_3():
    spec = PriorSpec.from_dict({**BASE, "outcome": {"family": "student_t"}})
    assert spec.outcome.df == 3.0


def test_smoothness_weights_normalised_and_default_uniform():
    mix = load_prior("smoothness-mixture")
    assert mix.classes == [0.5, 1.0, 2.0, 4.0]
    np.testing.assert_allclose(mix.weights, [0.25] * 4)
    spec = PriorSpec.from_dict({**BASE, "smoothness": {"choices": [1, 2], "weights": [1, 3]}})
    np.testing.assert_allclose(spec.weights, [0.25, 0.75])
    spec = PriorSpec.from_dict({**BASE, "smoothness": {"choices": [1, 2, 3]}})
    np.testing.assert_allclose(spec.weights, [1 / 3] * 3)
    # a class overrides every series' beta
    assert spec.series(0, "log_sd", smoothness_class=2).beta == 3.0
    with pytest.raises(ValueError, match="smoothness_class"):
        spec.series(0, "mean")
    with pytest.raises(ValueError, match="smoothness_class"):
        spec.series(0, "mean", smoothness_class=3)


def test_separate_smoothness_gives_location_and_spread_their_own_class():
    spec = PriorSpec.from_dict({**BASE, "smoothness": {"choices": [1, 2, 3], "weights": [1, 1, 2], "separate": True}})
    assert spec.separate and len(spec.classes) == 9
    np.testing.assert_allclose(spec.weights.reshape(3, 3), np.outer([0.25, 0.25, 0.5], [0.25, 0.25, 0.5]))
    for j, bj in enumerate([1.0, 2.0, 3.0]):
        for k, bk in enumerate([1.0, 2.0, 3.0]):
            assert spec.series(1, "mean", smoothness_class=3 * j + k).beta == bj
            assert spec.series(1, "log_sd", smoothness_class=3 * j + k).beta == bk
    with pytest.raises(ValueError, match="smoothness_class"):
        spec.series(0, "mean", smoothness_class=9)
    shared = PriorSpec.from_dict({**BASE, "smoothness": {"choices": [1, 2, 3]}})
    assert not shared.separate and "separate" not in shared.to_dict()["smoothness"]
    flex = load_prior("unit-free-flex")
    assert flex.separate and len(flex.classes) == 16


def test_separate_smoothness_needs_a_spread_series():
    data = {**BASE, "outcome": {"family": "bernoulli"}, "smoothness": {"choices": [1, 2], "separate": True}}
    data["arms"] = {"shared": {"mean": {"terms": 4}}}
    with pytest.raises(PriorSpecError, match=r"smoothness\.separate.*bernoulli"):
        PriorSpec.from_dict(data)


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    d = copy.deepcopy(BASE)
    path = _write(tmp_path, yaml.safe_dump(d).replace("scale: 0.5", "scale: 5e-1"), "exp.yaml")
    assert load_prior(path).arm(0).log_sd.scale == 0.5


# ----------------------------------------------------------------------------- bad inputs


def _set(path: str, value):
    def mutate(d):
        keys = path.split(".")
        node = d
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node.setdefault(k, {})
        if value is _DELETE:
            del node[keys[-1]]
        else:
            node[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
    return mutate


_DELETE = object()

BAD = [
    ("negative scale", _set("arms.shared.mean.scale", -1), "arms.shared.mean.scale",
     "expected a positive number, got -1"),
    ("zero beta", _set("arms.shared.log_sd.beta", 0), "arms.shared.log_sd.beta", "positive number"),
    ("unknown key", _set("arms.shared.mean.scael", 1.0), "arms.shared.mean.scael",
     "unknown field; did you mean 'scale'?"),
    ("unknown top key", _set("prior", 1), "prior", "unknown field"),
    ("terms not int", _set("arms.shared.mean.terms", 2.5), "arms.shared.mean.terms",
     "expected an integer, got 2.5"),
    ("terms zero", _set("arms.shared.mean.terms", 0), "arms.shared.mean.terms", "integer >= 1"),
    ("scale string", _set("arms.shared.mean.scale", "big"), "arms.shared.mean.scale",
     "expected a number, got 'big'"),
    ("unknown series", _set("arms.shared.mean.series", "legendre"), "arms.shared.mean.series",
     "expected one of 'cosine'"),
    ("empty choices", _set("smoothness", {"choices": []}), "smoothness.choices",
     "expected a non-empty list"),
    ("negative choice", _set("smoothness", {"choices": [1.0, -2.0]}), "smoothness.choices[1]",
     "positive number"),
    ("weights length", _set("smoothness", {"choices": [1.0, 2.0], "weights": [1.0]}),
     "smoothness.weights", "expected 2 weights"),
    ("negative weight", _set("smoothness", {"choices": [1.0, 2.0], "weights": [1.0, -1.0]}),
     "smoothness.weights[1]", "non-negative"),
    ("zero weights", _set("smoothness", {"choices": [1.0, 2.0], "weights": [0, 0]}),
     "smoothness.weights", "positive sum"),
    ("low >= high", _set("covariates.0.low", 1.0), "covariates[0].high", "expected high > low"),
    ("duplicate covariate", lambda d: d["covariates"].append({"name": "x", "low": 0, "high": 2}),
     "covariates[1].name", "duplicate covariate name 'x'"),
    ("no covariates", _set("covariates", []), "covariates", "non-empty"),
    ("missing name", _set("name", _DELETE), "name", "required field is missing"),
    ("both arms and model", _set("model", "mypkg.models:model"), "arms", "got both"),
    ("neither arms nor model", _set("arms", _DELETE), "arms", "got neither"),
    ("shared and treated", _set("arms.treated", {"mean": {}, "log_sd": {}}), "arms",
     "either 'shared' or both"),
    ("treated without control",
     _set("arms", {"treated": {"mean": {}, "log_sd": {}}}), "arms.control", "'control' is missing"),
    ("log_sd with bernoulli", _set("outcome.family", "bernoulli"), "arms.shared.log_sd",
     "not allowed with family bernoulli"),
    ("log_sd missing", _set("arms.shared.log_sd", _DELETE), "arms.shared.log_sd",
     "required for family gaussian"),
    ("unknown family", _set("outcome.family", "poisson"), "outcome.family",
     "expected one of 'gaussian', 'student_t', 'bernoulli' or 'hurdle_lognormal'"),
    ("df too small", _set("outcome", {"family": "student_t", "df": 2}), "outcome.df", "> 2"),
    ("df without student_t", _set("outcome.df", 5.0), "outcome.df", "only allowed with"),
    ("bad model reference", lambda d: (d.pop("arms"), d.update(model="not a reference")),
     "model", "expected 'package.module:function'"),
    ("smoothness with a model",
     lambda d: (d.pop("arms"), d.update(model="m:f", smoothness={"choices": [1.0]})),
     "smoothness", "only applies to series priors"),
    ("arms not a mapping", _set("arms", [1, 2]), "arms", "expected a mapping, got a list"),
    ("offset not finite", _set("arms.shared.mean.offset", float("inf")), "arms.shared.mean.offset",
     "finite number"),
]


@pytest.mark.parametrize("mutate,field,fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_inputs_name_file_and_field(tmp_path, mutate, field, fragment):
    d = copy.deepcopy(BASE)
    mutate(d)
    path = _write(tmp_path, d)
    err = _error(path)
    assert isinstance(err, ValueError)
    first = str(err).splitlines()[0]
    assert first.startswith(f"{path}: {field}: "), first
    assert fragment in first
    assert err.source == str(path) and err.problems[0][0] == field
    # the same from a dict names the given source
    with pytest.raises(PriorSpecError, match=r"^priors/bad\.yaml: "):
        PriorSpec.from_dict(d, source="priors/bad.yaml")


def test_every_problem_is_reported(tmp_path):
    d = copy.deepcopy(BASE)
    d["arms"]["shared"]["mean"]["scale"] = -1
    d["arms"]["shared"]["log_sd"]["terms"] = 0
    lines = str(_error(_write(tmp_path, d))).splitlines()
    assert len(lines) == 2 and all(line.startswith(str(tmp_path)) for line in lines)
    assert "arms.shared.mean.scale" in lines[0] and "arms.shared.log_sd.terms" in lines[1]


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("name: [unclosed\n", "YAML syntax error"),
        ("- 1\n- 2\n", "expected a mapping of fields at the top level, got list"),
        ("", "got nothing (empty file)"),
        ("name: a\nname: b\n", "duplicate key 'name'"),
        ("just a string", "got str"),
    ],
)
def test_file_level_yaml_errors(tmp_path, text, fragment):
    path = _write(tmp_path, text)
    msg = str(_error(path))
    assert msg.startswith(f"{path}: ") and fragment in msg


def test_python_tags_are_rejected_and_never_run(tmp_path):
    flag = tmp_path / "pwned"
    path = _write(tmp_path, f"name: !!python/object/apply:os.system ['touch {flag}']\n")
    msg = str(_error(path))
    assert msg.startswith(f"{path}: line 1")
    assert "YAML tag '!!python/object/apply:os.system' is not allowed" in msg
    assert not flag.exists()
    path = _write(tmp_path, "name: !!python/name:os.system\n", "tag2.yaml")
    assert "is not allowed" in str(_error(path))


def test_toml_syntax_error(tmp_path):
    path = _write(tmp_path, 'name = "x"\ncovariates = [\n', "bad.toml")
    msg = str(_error(path))
    assert msg.startswith(f"{path}: TOML syntax error")


def test_missing_file_and_wrong_suffix(tmp_path):
    missing = tmp_path / "nope.yaml"
    msg = str(_error(missing))
    assert msg.startswith(f"{missing}: no such prior file") and "beta1.yaml" in msg
    assert str(_error(Path("no-such-prior"))).startswith("no-such-prior: no such prior file")
    other = _write(tmp_path, "{}", "prior.json")
    assert "expected a .yaml, .yml or .toml file" in str(_error(other))
    assert "not a file" in str(_error(tmp_path))


# ----------------------------------------------------------------------------- user models


def _model_spec(ref: str, source: str = "priors/custom.yaml") -> PriorSpec:
    d = {k: v for k, v in BASE.items() if k != "arms"}
    return PriorSpec.from_dict({**d, "model": ref}, source=source)


def test_user_model_is_imported_lazily(tmp_path, monkeypatch):
    module = tmp_path / "my_prior_models_xyz.py"
    module.write_text(textwrap.dedent("""
        IMPORTED = True
        def model(x, a, y, mask, x_query):
            return "called"
        class Holder:
            @staticmethod
            def model(x, a, y, mask, x_query):
                return "nested"
        NOT_CALLABLE = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys
    monkeypatch.delitem(sys.modules, "my_prior_models_xyz", raising=False)
    spec = _model_spec("my_prior_models_xyz:model")
    assert "my_prior_models_xyz" not in sys.modules  # loading does not import
    assert spec.arms is None and spec.model == "my_prior_models_xyz:model"
    fn = spec.resolve_model()
    assert fn(None, None, None, None, None) == "called"
    assert _model_spec("my_prior_models_xyz:Holder.model").resolve_model()(0, 0, 0, 0, 0) == "nested"
    with pytest.raises(PriorSpecError, match=r"^priors/custom\.yaml: model: .*not callable"):
        _model_spec("my_prior_models_xyz:NOT_CALLABLE").resolve_model()
    with pytest.raises(PriorSpecError, match=r"^priors/custom\.yaml: model: .*no attribute 'missing'"):
        _model_spec("my_prior_models_xyz:missing").resolve_model()
    with pytest.raises(PriorSpecError, match="has no series priors"):
        spec.arm(0)


def test_unimportable_user_model_fails_clearly(tmp_path, monkeypatch):
    spec = _model_spec("no_such_package_qq.models:model")
    with pytest.raises(PriorSpecError) as info:
        spec.resolve_model()
    msg = str(info.value)
    assert msg.startswith("priors/custom.yaml: model: cannot import module 'no_such_package_qq.models'")
    assert "ModuleNotFoundError" in msg
    broken = tmp_path / "broken_prior_mod_qq.py"
    broken.write_text("def model(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PriorSpecError, match="SyntaxError"):
        _model_spec("broken_prior_mod_qq:model").resolve_model()


def test_user_model_file_loads_from_yaml(tmp_path):
    path = _write(tmp_path, textwrap.dedent("""
        name: custom
        covariates: [{name: dose, low: 0, high: 10}]
        model: "mypkg.models:model"
    """), "custom.yaml")
    spec = load_prior(path)
    assert spec.model == "mypkg.models:model" and spec.d == 1
    with pytest.raises(PriorSpecError, match=rf"^{path}: model: cannot import"):
        spec.resolve_model()


# ----------------------------------------------------------------------------- properties

series = st.fixed_dictionaries({
    "terms": st.integers(1, 30),
    "beta": st.floats(0.01, 10),
    "scale": st.floats(1e-3, 100),
    "offset": st.floats(-10, 10),
})


@settings(max_examples=40, deadline=None)
@given(mean=series, log_sd=series, low=st.floats(-1e3, 1e3), width=st.floats(1e-3, 1e3))
def test_yaml_roundtrip_keeps_hash(mean, log_sd, low, width):
    d = copy.deepcopy(BASE)
    d["arms"]["shared"] = {"mean": mean, "log_sd": log_sd}
    d["covariates"][0].update(low=low, high=low + width)
    spec = PriorSpec.from_dict(d)
    again = PriorSpec.from_dict(yaml.load(yaml.safe_dump(d), Loader=yaml.SafeLoader))
    assert again.hash() == spec.hash()
    assert spec.arm(1).mean.scale == mean["scale"]


@settings(max_examples=30, deadline=None)
@given(value=st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
       part=st.sampled_from(["mean", "log_sd"]), key=st.sampled_from(["scale", "beta"]))
def test_non_positive_values_name_their_field(value, part, key):
    d = copy.deepcopy(BASE)
    d["arms"]["shared"][part][key] = value
    with pytest.raises(PriorSpecError) as info:
        PriorSpec.from_dict(d, source="p.yaml")
    assert str(info.value).startswith(f"p.yaml: arms.shared.{part}.{key}: expected a positive number")
