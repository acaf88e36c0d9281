r"""Prior files: schema, loading and validation.

A prior file (YAML or TOML) declares what the experimenter believes about the arm-conditional
outcome functions before the experiment starts. It compiles to a NumPyro model
(:mod:`bayesdesign.models`) and to a simulation scenario (:class:`bayesdesign.models.PriorTasks`).
The full reference, with examples, is ``docs/priors.md``.

Series priors
-------------
Covariates :math:`x \in [\text{low}, \text{high}]^d` are mapped to :math:`u \in [0, 1]^d`
(:func:`bayesdesign.basis.to_unit`). Every function of the covariates (per arm: the mean and the
log standard deviation) is an additive cosine series

.. math::
    f(u) = \text{offset} + \sum_{j} \theta_j \phi_j(u), \qquad
    \theta_j \sim N\!\left(0,\ \text{scale}^2 (j + 1)^{-(2\beta + 1)}\right),

with :math:`\phi_0 = 1`, :math:`\phi_j(u) = \sqrt{2}\cos(\pi j u)` for
:math:`j = 1..\text{terms}` (one block of terms per coordinate when :math:`d > 1`). Larger
:math:`\beta` gives smoother draws. Outcomes are

- ``gaussian``: :math:`Y \mid x, a \sim N(\mu_a(x), \sigma_a(x)^2)`,
  :math:`\mu_a = f^{\text{mean}}_a`, :math:`\log\sigma_a = f^{\text{log\_sd}}_a`;
- ``student_t``: :math:`Y = \mu_a(x) + \sigma_a(x)\sqrt{(\nu - 2)/\nu}\, T_\nu`, so that
  :math:`\sigma_a(x)` is the true standard deviation (:math:`\nu` = ``df`` > 2);
- ``bernoulli``: :math:`P(Y = 1 \mid x, a) = \text{sigmoid}(f^{\text{mean}}_a(x))` (the mean series
  is on the logit scale; there is no ``log_sd``);
- ``hurdle_lognormal`` (zero-heavy, skewed outcomes such as revenue): :math:`Y = B\, e^{m + s Z}`
  with :math:`B \sim \mathrm{Bernoulli}(p_a(x))`, :math:`Z \sim N(0, 1)` independent,
  :math:`p_a = \text{sigmoid}(f^{\text{purchase}}_a)`, :math:`m = f^{\text{log\_amount}}_a` and
  :math:`\log s = f^{\text{log\_amount\_sd}}_a`; each arm declares these three series instead of
  ``mean`` and ``log_sd``, and its mean and sd are implied
  (:func:`bayesdesign.design.environment.hurdle_lognormal_moments`).

A ``smoothness`` mixture with classes :math:`\beta_1..\beta_K` and weights :math:`w_k` replaces
the ``beta`` of every series by :math:`\beta_k`, class :math:`k` having prior probability
:math:`w_k`; with ``separate: true`` the location and spread series choose their class
independently (:math:`K^2` classes, :class:`Smoothness`).

Errors
------
Every invalid input raises :class:`PriorSpecError` whose message names the file and the field:
``priors/bad.yaml: arms.shared.mean.scale: expected a positive number, got -1``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .basis import to_unit

__all__ = [
    "PriorSpecError",
    "PriorSpec",
    "Covariate",
    "Outcome",
    "SeriesPrior",
    "ArmPrior",
    "Arms",
    "Smoothness",
    "load_prior",
    "list_priors",
    "shipped_prior_dir",
    "SERIES_PARTS",
]

Number = Annotated[float, Strict(), AllowInfNan(False)]
Integer = Annotated[int, Strict()]
Text = Annotated[str, Strict()]

_MODEL_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_SUFFIXES = (".yaml", ".yml", ".toml")


class PriorSpecError(ValueError):
    """An invalid prior file. ``str(err)`` is one line per problem, ``'<file>: <field>: <what>'``.

    Attributes
    ----------
    source : the file (or ``'<dict>'``) the spec came from.
    problems : list of ``(field, message)`` pairs; ``field`` is a dotted path such as
        ``'arms.shared.mean.scale'`` or ``'covariates[0].high'`` (empty for file-level errors).
    """

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]):
        self.source = str(source)
        self.problems = [(str(f), str(m)) for f, m in problems]
        lines = [
            f"{self.source}: {field}: {msg}" if field else f"{self.source}: {msg}"
            for field, msg in self.problems
        ]
        super().__init__("\n".join(lines))


class _FieldProblem(ValueError):
    """Raised inside validators to report a problem at a sub-path of the validated object."""

    def __init__(self, loc: tuple[str | int, ...], msg: str):
        self.loc = loc
        self.msg = msg
        super().__init__(msg)


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Covariate(_Base):
    """A covariate ``name`` observed on ``[low, high]`` (``low < high``), mapped to ``[0, 1]``."""

    name: Text
    low: Number
    high: Number

    @model_validator(mode="after")
    def _check_order(self) -> Covariate:
        if not self.low < self.high:
            raise _FieldProblem(
                ("high",), f"expected high > low, got low={_fmt(self.low)}, high={_fmt(self.high)}"
            )
        return self


class Outcome(_Base):
    r"""Outcome family: ``gaussian``, ``student_t`` (``df`` :math:`\nu > 2`, default 3),
    ``bernoulli`` (mean series on the logit scale) or ``hurdle_lognormal`` (series ``purchase``,
    ``log_amount``, ``log_amount_sd`` per arm). ``standardize: true`` states the mean and
    log-sd series for outcomes standardized by the experiment itself (the conjugate teachers
    centre and scale by the pooled mean and sd of the earlier units), so the prior need not know
    the outcome's units."""

    family: Literal["gaussian", "student_t", "bernoulli", "hurdle_lognormal"] = "gaussian"
    df: Number | None = None
    standardize: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_df(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("family") == "student_t" and "df" not in data:
            return {**data, "df": 3.0}
        return data

    @model_validator(mode="after")
    def _check_df(self) -> Outcome:
        if self.family == "student_t":
            if self.df is None or not self.df > 2:
                raise _FieldProblem(
                    ("df",), f"expected a number > 2 (finite variance), got {_fmt(self.df)}"
                )
        elif self.df is not None:
            raise _FieldProblem(("df",), f"only allowed with family student_t, not {self.family}")
        if self.standardize and self.family == "bernoulli":
            raise _FieldProblem(("standardize",), "bernoulli outcomes have no units to standardize")
        if self.standardize and self.family == "hurdle_lognormal":
            raise _FieldProblem(
                ("standardize",),
                "not supported with family hurdle_lognormal (state log_amount's offset in the outcome's units)",
            )
        return self


class SeriesPrior(_Base):
    r"""Gaussian cosine-series prior :math:`f(u) = \text{offset} + \sum_j \theta_j \phi_j(u)`,
    :math:`\theta_j \sim N(0, \text{scale}^2 (j + 1)^{-(2\beta + 1)})`, ``j = 0..terms``."""

    series: Literal["cosine"] = "cosine"
    terms: Integer = Field(10, ge=1)
    beta: Number = Field(1.0, gt=0)
    scale: Number = Field(1.0, gt=0)
    offset: Number = 0.0


class ArmPrior(_Base):
    r"""Prior of one arm: ``mean`` series and ``log_sd`` series (absent for bernoulli); for
    ``hurdle_lognormal`` instead ``purchase`` (logit of :math:`P(Y > 0)`), ``log_amount`` (mean of
    :math:`\log Y` given :math:`Y > 0`) and ``log_amount_sd`` (log of its sd). Which are required
    depends on the outcome family (checked by :class:`PriorSpec`)."""

    mean: SeriesPrior | None = None
    log_sd: SeriesPrior | None = None
    purchase: SeriesPrior | None = None
    log_amount: SeriesPrior | None = None
    log_amount_sd: SeriesPrior | None = None


class Arms(_Base):
    """Either ``shared`` (both arms independently from the same prior) or ``treated`` and
    ``control``."""

    shared: ArmPrior | None = None
    treated: ArmPrior | None = None
    control: ArmPrior | None = None

    @model_validator(mode="after")
    def _check_layout(self) -> Arms:
        given = [k for k in ("shared", "treated", "control") if getattr(self, k) is not None]
        if given == ["shared"] or given == ["treated", "control"]:
            return self
        if "shared" in given:
            raise _FieldProblem((), "give either 'shared' or both 'treated' and 'control', not both")
        missing = "control" if given == ["treated"] else "treated" if given else "shared"
        raise _FieldProblem(
            (missing,) if given else (),
            "give either 'shared' or both 'treated' and 'control'"
            + (f"; '{missing}' is missing" if given else ", got neither"),
        )


class Smoothness(_Base):
    r"""Mixture over smoothness classes: class :math:`k` has prior weight :math:`w_k` and uses
    :math:`\beta = \text{choices}[k]` in every series. Weights default to uniform and are
    normalised on load.

    With ``separate: true`` the series of the location (``mean``, ``purchase``, ``log_amount``)
    and those of the spread (``log_sd``, ``log_amount_sd``) choose their class independently:
    :math:`K^2` classes :math:`(\beta_j, \beta_k)`, prior weight :math:`w_j w_k`, index
    :math:`jK + k`. A smooth mean beside a rough variance function (a variance that jumps, with
    a linear mean) is then one class of the prior instead of a compromise between two.
    Families with a spread series only (not ``bernoulli``)."""

    choices: list[Annotated[Number, Field(gt=0)]] = Field(min_length=1)
    weights: list[Annotated[Number, Field(ge=0)]] | None = Field(None, validate_default=True)
    separate: bool | None = None

    @field_validator("weights")
    @classmethod
    def _normalise(cls, w: list[float] | None, info: ValidationInfo) -> list[float] | None:
        choices = info.data.get("choices")
        if choices is None:  # choices invalid: reported on their own
            return w
        if w is None:
            return [1.0 / len(choices)] * len(choices)
        if len(w) != len(choices):
            raise ValueError(
                f"expected {len(choices)} weights (one per choice), got {len(w)}"
            )
        total = math.fsum(w)
        if not total > 0:
            raise ValueError("expected non-negative weights with a positive sum, got all zero")
        return [x / total for x in w]


class PriorSpec(_Base):
    r"""A validated prior file.

    Fields
    ------
    name : str
    description : str, optional
    covariates : list of :class:`Covariate`, at least one, unique names.
    outcome : :class:`Outcome` (default gaussian).
    arms : :class:`Arms` — series priors per arm; or
    model : ``"package.module:function"`` — a user NumPyro model (exactly one of the two).
    smoothness : :class:`Smoothness`, optional (``arms`` only).

    Notes
    -----
    :attr:`classes` lists the smoothness classes: the mixture's :math:`\beta_k`, or ``[None]``
    when the file has no mixture (``None``: every series keeps its own ``beta``). Arrays of
    tasks index classes by position in this list.
    """

    name: Text
    description: Text | None = None
    covariates: list[Covariate] = Field(min_length=1)
    outcome: Outcome = Outcome()
    arms: Arms | None = None
    model: Text | None = None
    smoothness: Smoothness | None = None

    _source: str = PrivateAttr("<dict>")

    @field_validator("covariates")
    @classmethod
    def _unique_names(cls, covs: list[Covariate]) -> list[Covariate]:
        seen: dict[str, int] = {}
        for i, c in enumerate(covs):
            if c.name in seen:
                raise _FieldProblem(
                    (i, "name"), f"duplicate covariate name {c.name!r} (also covariates[{seen[c.name]}])"
                )
            seen[c.name] = i
        return covs

    @field_validator("model")
    @classmethod
    def _model_ref(cls, ref: str | None) -> str | None:
        if ref is not None and not _MODEL_REF.match(ref):
            raise ValueError(f"expected 'package.module:function', got {ref!r}")
        return ref

    @model_validator(mode="after")
    def _check_consistency(self) -> PriorSpec:
        if (self.arms is None) == (self.model is None):
            raise _FieldProblem(
                ("arms",),
                "give exactly one of 'arms' (series priors) or 'model' (a user NumPyro model), "
                + ("got both" if self.arms is not None else "got neither"),
            )
        if self.model is not None and self.smoothness is not None:
            raise _FieldProblem(
                ("smoothness",), "only applies to series priors under 'arms', not to a user model"
            )
        if self.smoothness is not None and self.smoothness.separate and self.outcome.family == "bernoulli":
            raise _FieldProblem(
                ("smoothness", "separate"),
                "the bernoulli family has no spread series to give its own class; leave 'separate' out",
            )
        if self.arms is not None:
            for key in ("shared", "treated", "control"):
                arm = getattr(self.arms, key)
                if arm is not None:
                    _check_arm_parts(self.outcome.family, key, arm)
        return self

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> PriorSpec:
        """Validate a plain mapping (as read from a file); errors name ``source`` and the field."""
        source = str(source)
        if not isinstance(data, Mapping):
            got = "nothing (empty file)" if data is None else type(data).__name__
            raise PriorSpecError(source, [("", f"expected a mapping of fields at the top level, got {got}")])
        try:
            spec = cls.model_validate(dict(data))
        except ValidationError as err:
            raise PriorSpecError(source, _problems(err)) from None
        spec._source = source
        return spec

    # ---------------------------------------------------------------- serialisation

    @property
    def source(self) -> str:
        """The file this spec was loaded from (``'<dict>'`` for :meth:`from_dict`)."""
        return self._source

    def to_dict(self) -> dict[str, Any]:
        """The validated spec as plain data (defaults filled in, absent optionals left out,
        weights normalised); ``PriorSpec.from_dict(spec.to_dict())`` gives the same spec."""
        return self.model_dump(mode="json", exclude_none=True)

    def hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`to_dict`: equal for a YAML and a TOML
        file of the same content, and for files that differ only in defaults and layout."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()

    # ---------------------------------------------------------------- accessors

    @property
    def d(self) -> int:
        """Number of covariates."""
        return len(self.covariates)

    @property
    def covariate_names(self) -> list[str]:
        return [c.name for c in self.covariates]

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)``, each ``(d,)``: the covariate box in user units."""
        return (
            np.array([c.low for c in self.covariates], dtype=float),
            np.array([c.high for c in self.covariates], dtype=float),
        )

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """Map covariates ``(..., d)`` in user units to the unit cube (clipped; :func:`~bayesdesign.basis.to_unit`)."""
        return to_unit(x, *self.bounds)

    @property
    def family(self) -> str:
        return self.outcome.family

    @property
    def is_mixture(self) -> bool:
        return self.smoothness is not None

    @property
    def separate(self) -> bool:
        """Whether the location and spread series choose their smoothness class independently."""
        return self.smoothness is not None and bool(self.smoothness.separate)

    @property
    def classes(self) -> list[float | tuple[float, float] | None]:
        """Smoothness classes: the mixture's betas, or ``[None]`` without a mixture (every series
        keeps its own ``beta``); with ``separate`` the pairs ``(beta of the location series, beta
        of the spread series)``."""
        if self.smoothness is None:
            return [None]
        c = list(self.smoothness.choices)
        return [(float(j), float(k)) for j in c for k in c] if self.separate else c

    @property
    def weights(self) -> np.ndarray:
        """Prior class probabilities ``(K,)`` (sum to one); ``[1.0]`` without a mixture."""
        if self.smoothness is None:
            return np.array([1.0])
        w = np.asarray(self.smoothness.weights, dtype=float)
        return np.outer(w, w).reshape(-1) if self.separate else w

    def _require_arms(self) -> Arms:
        if self.arms is None:
            raise PriorSpecError(
                self.source, [("arms", f"prior {self.name!r} uses a user model ({self.model}); "
                               "it has no series priors per arm")]
            )
        return self.arms

    def arm(self, a: int) -> ArmPrior:
        """The :class:`ArmPrior` of arm ``a``: 0 = control, 1 = treated."""
        arms = self._require_arms()
        if a not in (0, 1):
            raise ValueError(f"arm: expected 0 (control) or 1 (treated), got {a!r}")
        if arms.shared is not None:
            return arms.shared
        return arms.treated if a == 1 else arms.control  # type: ignore[return-value]

    @property
    def parts(self) -> tuple[str, ...]:
        """The series each arm declares (:data:`SERIES_PARTS` of the family)."""
        return SERIES_PARTS[self.family]

    @property
    def has_mean_series(self) -> bool:
        """Series priors whose arms declare a ``mean`` series (gaussian, student_t, bernoulli): the
        form of the fast series fits, the students' conjugate layer and the outcome offsets. False
        for a user model and for ``hurdle_lognormal`` (three other series per arm)."""
        return self.arms is not None and "mean" in self.parts

    def series(self, a: int, part: str = "mean", smoothness_class: int | None = None) -> SeriesPrior:
        """The effective series prior of ``part`` (``'mean'``, ``'log_sd'``, or for
        ``hurdle_lognormal`` ``'purchase'``, ``'log_amount'``, ``'log_amount_sd'``) of arm ``a``:
        with a mixture, ``beta`` is replaced by ``classes[smoothness_class]`` (required)."""
        if part not in _PART_WHAT:
            raise ValueError(f"part: expected one of {list(_PART_WHAT)}, got {part!r}")
        sp = getattr(self.arm(a), part)
        if sp is None:
            raise ValueError(f"{self.source}: family {self.family} has no {part} series")
        beta = self.class_beta(smoothness_class, part)
        return sp if beta is None else sp.model_copy(update={"beta": beta})

    def class_beta(self, smoothness_class: int | None, part: str = "mean") -> float | None:
        """The beta of class ``smoothness_class`` for the series ``part`` (it matters only with
        ``separate``: the spread series take the second beta of the pair); ``None`` (keep each
        series' beta) without a mixture. A mixture requires a class index."""
        if self.smoothness is None:
            if smoothness_class not in (None, 0):
                raise ValueError(
                    f"smoothness_class: prior {self.name!r} has no smoothness mixture (only "
                    f"class 0), got {smoothness_class!r}"
                )
            return None
        k = len(self.classes)
        if smoothness_class is None:
            raise ValueError(
                f"smoothness_class: prior {self.name!r} is a mixture over {k} smoothness classes; "
                f"pass a class index 0..{k - 1}"
            )
        if not (isinstance(smoothness_class, int | np.integer) and 0 <= smoothness_class < k):
            raise ValueError(f"smoothness_class: expected an index in 0..{k - 1}, got {smoothness_class!r}")
        beta = self.classes[int(smoothness_class)]
        if isinstance(beta, tuple):
            return beta[1] if part in SPREAD_PARTS else beta[0]
        return float(beta)

    @property
    def n_terms(self) -> int:
        """The largest ``terms`` over all series: the common basis size ``J`` of compiled models
        (series with fewer terms have zero prior scale on the rest)."""
        arms = self._require_arms()
        terms = [
            sp.terms
            for arm in (arms.shared, arms.treated, arms.control)
            if arm is not None
            for sp in (getattr(arm, part) for part in _PART_WHAT)
            if sp is not None
        ]
        return max(terms)

    def resolve_model(self) -> Callable[..., Any]:
        """Import the user model named by ``model`` (``'package.module:function'``).

        The model protocol is ``model(x, a, y, mask, x_query)`` with ``x`` (n, d) in unit-cube
        coordinates, ``a`` (n,) arms 0/1, ``y`` (n,), ``mask`` (n,) booleans (False marks padding),
        ``x_query`` (q, d); it must record ``numpyro.deterministic("mean", ...)`` and
        ``numpyro.deterministic("sd", ...)``, each of shape (2, q) (arm 0, arm 1).
        """
        if self.model is None:
            raise PriorSpecError(self.source, [("model", "not given (this prior uses 'arms')")])
        mod_name, attr_path = self.model.split(":")
        try:
            obj: Any = importlib.import_module(mod_name)
        except Exception as err:  # any import failure (syntax error, missing dependency) is the user's
            raise PriorSpecError(
                self.source,
                [("model", f"cannot import module {mod_name!r} ({type(err).__name__}: {err})")],
            ) from err
        for part in attr_path.split("."):
            if not hasattr(obj, part):
                raise PriorSpecError(
                    self.source,
                    [("model", f"module {mod_name!r} has no attribute {attr_path!r}")],
                )
            obj = getattr(obj, part)
        if not callable(obj):
            raise PriorSpecError(
                self.source,
                [("model", f"{self.model!r} is not callable (got {type(obj).__name__})")],
            )
        return obj


SERIES_PARTS = {
    "gaussian": ("mean", "log_sd"),
    "student_t": ("mean", "log_sd"),
    "bernoulli": ("mean",),
    "hurdle_lognormal": ("purchase", "log_amount", "log_amount_sd"),
}
"""The series each arm declares, per outcome family."""

SPREAD_PARTS = ("log_sd", "log_amount_sd")
"""The series of the outcome's spread (their own smoothness class under ``smoothness.separate``)."""

_PART_WHAT = {
    "mean": "a series prior for the mean",
    "log_sd": "a series prior for log sd",
    "purchase": "a series prior for the logit of P(Y > 0)",
    "log_amount": "a series prior for the mean of log Y given Y > 0",
    "log_amount_sd": "a series prior for the log sd of log Y given Y > 0",
}


def _check_arm_parts(family: str, key: str, arm: ArmPrior) -> None:
    """The arm declares exactly the series of its family: a missing one is required, another one is
    not allowed (first problem raised, naming ``arms.<key>.<part>``)."""
    want = SERIES_PARTS[family]
    for part in want:
        if getattr(arm, part) is None:
            msg = ("required field is missing" if part == "mean"
                   else f"required for family {family} ({_PART_WHAT[part]})")
            raise _FieldProblem(("arms", key, part), msg)
    for part in _PART_WHAT:
        if part not in want and getattr(arm, part) is not None:
            if family == "bernoulli" and part == "log_sd":
                why = "the sd is implied by the mean"
            else:
                why = f"family {family} declares {', '.join(want)}"
            raise _FieldProblem(("arms", key, part), f"not allowed with family {family} ({why})")


# -------------------------------------------------------------------- error formatting

_ALL_FIELDS = sorted(
    {
        f
        for m in (Covariate, Outcome, SeriesPrior, ArmPrior, Arms, Smoothness, PriorSpec)
        for f in m.model_fields
    }
)


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, Mapping):
        return "a mapping"
    if isinstance(v, list | tuple):
        return "a list"
    return repr(v) if v is None or isinstance(v, bool) else str(v)


def _path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_TYPE_WORDS = {
    "float_type": "a number",
    "float_parsing": "a number",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "string_type": "a string",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "bool_type": "true or false",
}


def _message(err: Mapping[str, Any]) -> tuple[tuple[str | int, ...], str]:
    """Turn one pydantic error into ``(loc, message)`` in the package's words."""
    loc = tuple(err["loc"])
    typ = err["type"]
    ctx = err.get("ctx") or {}
    got = _fmt(err.get("input"))
    if typ == "value_error" and isinstance(ctx.get("error"), _FieldProblem):
        prob = ctx["error"]
        return loc + tuple(prob.loc), prob.msg
    if typ == "value_error":
        return loc, str(ctx.get("error", err["msg"]))
    if typ == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        near = difflib.get_close_matches(name, _ALL_FIELDS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return loc, f"unknown field{hint} (see docs/priors.md for the schema)"
    if typ == "missing":
        return loc, "required field is missing"
    if typ == "greater_than":
        gt = ctx.get("gt")
        what = "a positive number" if gt == 0 else f"a number > {_fmt(gt)}"
        return loc, f"expected {what}, got {got}"
    if typ == "greater_than_equal":
        ge = ctx.get("ge")
        what = "a non-negative number" if ge == 0 else f"a number >= {_fmt(ge)}"
        if isinstance(err.get("input"), int):
            what = f"an integer >= {_fmt(ge)}"
        return loc, f"expected {what}, got {got}"
    if typ == "too_short":
        n = ctx.get("min_length")
        what = "a non-empty list" if n == 1 else f"a list of at least {n} items"
        return loc, f"expected {what}, got {ctx.get('actual_length')} items"
    if typ == "literal_error":
        return loc, f"expected one of {ctx.get('expected')}, got {got}"
    if typ == "finite_number":
        return loc, f"expected a finite number, got {got}"
    if typ in _TYPE_WORDS:
        inp = err.get("input")
        kind = "" if isinstance(inp, Mapping | list | tuple) else f" ({type(inp).__name__})"
        return loc, f"expected {_TYPE_WORDS[typ]}, got {got}{kind}"
    return loc, f"{err['msg']} (got {got})"


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        loc, msg = _message(e)
        out.append((_path(loc) or "(top level)", msg))
    return out


# -------------------------------------------------------------------- file reading


class _SafeLoader(yaml.SafeLoader):
    """:class:`yaml.SafeLoader` (what ``yaml.safe_load`` uses: plain data only, no object tags)
    that also rejects duplicate keys and reads ``1e-3`` as a float (YAML 1.2), not a string."""


def _construct_mapping(loader: _SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in out:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark,
            )
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_SafeLoader)  # a SafeLoader subclass: plain data only
    except yaml.constructor.ConstructorError as err:
        where = _mark(err.problem_mark)
        tag = re.search(r"tag '([^']*)'", str(err.problem))
        if tag:
            short = tag.group(1).replace("tag:yaml.org,2002:", "!!")
            msg = (f"YAML tag {short!r} is not allowed: prior files are plain data and tags that "
                   "construct objects are rejected")
        else:
            msg = f"YAML error: {err.problem}"
        raise PriorSpecError(source, [("", f"{where}{msg}")]) from None
    except yaml.YAMLError as err:
        where = _mark(getattr(err, "problem_mark", None))
        problem = getattr(err, "problem", None) or str(err)
        raise PriorSpecError(source, [("", f"{where}YAML syntax error: {problem}")]) from None


def _mark(mark: Any) -> str:
    return "" if mark is None else f"line {mark.line + 1}, column {mark.column + 1}: "


def _read_toml(text: str, source: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PriorSpecError(source, [("", f"TOML syntax error: {err}")]) from None


def shipped_prior_dir() -> Path:
    """The folder of shipped prior files: ``bayesdesign/priors/`` when the package carries them
    (package data of an installed wheel), else ``priors/`` at the repository root (a source
    checkout or an editable install)."""
    here = Path(__file__).resolve().parent
    packaged = here / "priors"
    return packaged if packaged.is_dir() else here.parent / "priors"


def list_priors() -> list[str]:
    """File names of the shipped priors (``'beta1.yaml'``, ...), sorted."""
    folder = shipped_prior_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix in _SUFFIXES and p.is_file())


def _find(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    if p.exists():
        raise PriorSpecError(str(path), [("", "not a file")])
    if len(p.parts) == 1:  # a bare name: look among the shipped priors
        folder = shipped_prior_dir()
        names = [p.name] if p.suffix in _SUFFIXES else [p.name + s for s in _SUFFIXES]
        for name in names:
            if (folder / name).is_file():
                return folder / name
    shipped = ", ".join(list_priors()) or "none"
    raise PriorSpecError(str(path), [("", f"no such prior file (shipped priors: {shipped})")])


def load_prior(path: str | Path) -> PriorSpec:
    """Load and validate a prior file.

    Parameters
    ----------
    path : a ``.yaml``/``.yml`` or ``.toml`` file, or the name of a shipped prior
        (``'beta1'``, ``'beta1.toml'``, ``'smoothness-mixture'``; see :func:`list_priors`).
        YAML is read with a safe loader (plain data only); TOML with :mod:`tomllib`.

    Returns
    -------
    PriorSpec

    Raises
    ------
    PriorSpecError
        naming the file and the field for every problem (missing file, syntax error, schema).
    """
    file = _find(path)
    source = str(path) if Path(path) == file else str(file)
    if file.suffix not in _SUFFIXES:
        raise PriorSpecError(source, [("", f"expected a .yaml, .yml or .toml file, got {file.suffix!r}")])
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PriorSpecError(source, [("", f"cannot read file ({err})")]) from None
    data = _read_toml(text, source) if file.suffix == ".toml" else _read_yaml(text, source)
    return PriorSpec.from_dict(data, source=source)
