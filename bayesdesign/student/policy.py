r"""The student as a design: :class:`StudentPolicy`, with history encodings cached per replication.

History tokens are embedded independently (:mod:`bayesdesign.student.model`), so the keys and
values of every cross-attention layer and the gate's running sum are computed once per unit, when
the unit arrives (:meth:`StudentPolicy.update`), and a decision runs only the query side over the
cache. Replications run in lockstep share one history length, so the cache needs no padding.

Two backends compute the same decisions: the torch model itself, and the compiled inference
engine (:mod:`bayesdesign.student.engine`), about six times faster per decision at batch 1 and
faster per replication in lockstep simulations too. The default is the engine on the CPU.

The probability actually used follows the teacher's recorded configuration: 1/2 while fewer than
``burn_in`` units have been seen, then the student's unclipped probability (the Neyman ratio,
or the teacher's log-odds rule on the conjugate layer's posterior, each with the learned
corrections: :meth:`~bayesdesign.student.model.StudentModel.decide`), clipped to
:math:`[\varepsilon_t, 1 - \varepsilon_t]` with the teacher's :class:`~bayesdesign.design.policy.ClipSchedule`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..design.policy import ClipSchedule, SequentialPolicy
from ..design.registry import split_suffixes
from ..efficiency import extremes_init, extremes_update, has_atom
from .checkpoint import Student, load_student, read_config
from .engine import Engine, compiled_on_disk, standardize, to_unit
from .model import Context
from .scaling import Y_CLAMP, running_atom, running_standardize

__all__ = ["StudentPolicy", "StudentState", "load_policy", "resolve_student_path"]


class _KVCache:
    """Growable keys/values of all layers, ``(2 L, B, capacity, D)``; ``filled`` tokens written
    (the null token, then the units).

    States share a cache; a state whose length differs from ``filled`` (an older state updated
    again: a branch) gets a copy first, so states behave as values.
    """

    def __init__(self, kv: torch.Tensor, filled: int):
        self.kv, self.filled = kv, filled

    def append(self, n: int, new: torch.Tensor) -> _KVCache:
        m = new.shape[2]
        buf = self if n == self.filled else _KVCache(self.kv.clone(), n)
        cap = buf.kv.shape[2]
        if n + m > cap:
            grown = buf.kv.new_empty((*buf.kv.shape[:2], max(2 * cap, n + m), buf.kv.shape[3]))
            grown[:, :, :n] = buf.kv[:, :, :n]
            buf.kv = grown
        buf.kv[:, :, n : n + m] = new
        buf.filled = n + m
        return buf


class StudentState(NamedTuple):
    """State of the ``torch`` backend: ``t`` units seen (the history length), the shared cache,
    the gate's running sum (B, G), the conjugate layer's running sums (B, S) (``None`` without the
    layer), the history side of the next decision
    (:class:`~bayesdesign.student.model.HistorySummary`, ``None`` before any unit), and as in
    :class:`~bayesdesign.student.engine.EngineState` ``atom`` and ``ext``."""

    t: int
    cache: _KVCache
    gate_sum: torch.Tensor
    stats: torch.Tensor | None = None
    summary: object = None
    atom: torch.Tensor | None = None
    ext: np.ndarray | None = None


class StudentPolicy(SequentialPolicy):
    """A trained student (:class:`~bayesdesign.student.checkpoint.Student`) as a sequential design.

    Parameters
    ----------
    student : the loaded student (see :func:`load_policy` to load from a folder).
    device : torch device of the ``torch`` backend (default CPU: decisions are tiny).
    num_threads : if not ``None``, set torch's intra-op threads for the process
        (``torch.set_num_threads``). Default 1: the student's operations are too small to gain
        from more, and on shared cores extra threads made the student design about 4x slower.
    backend : ``"engine"``: the compiled inference engine (:mod:`bayesdesign.student.engine`):
        about 0.13 ms per decision at a history of 1000 units, against 0.7–0.9 ms for torch, and
        faster per replication in lockstep too; compiled on first use (about 40 s once per
        machine; Numba caches it on disk). ``"torch"``: the torch model with cached history
        encodings; faster when one history answers hundreds of queries at once (a grid for a
        plot), any torch device, and the only one with :meth:`outputs`. ``"auto"`` (default):
        the engine on the CPU, torch on other devices. Both compute the same function (tested
        to 1e-5). Only the engine implements the teacher's ``reweight`` (a student given
        ``:reweight``); the torch backend refuses it (:meth:`init`).
    """

    name = "student"
    box_origin = "the box the student was trained on"

    def __init__(
        self, student: Student, device: str | torch.device = "cpu", num_threads: int | None = 1, backend: str = "auto"
    ):
        if backend not in ("auto", "engine", "torch"):
            raise ValueError(f"backend: expected 'auto', 'engine' or 'torch', got {backend!r}")
        if backend == "engine" and torch.device(device).type != "cpu":
            raise ValueError(f"backend 'engine' runs on the CPU; got device {device!r} (use backend='torch')")
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        tc = student.teacher_config
        clip = ClipSchedule(**tc["clip"]) if "clip" in tc else ClipSchedule()
        sc = student.scaling
        super().__init__((np.asarray(sc.low), np.asarray(sc.high)), clip)
        self.student = student
        self.model = student.model.to(device).eval()
        self.device = torch.device(device)
        self.backend = backend
        self.burn_in = int(tc.get("burn_in", 0))
        self._layers = self.model.cfg.n_layers
        self._engine = None

    @property
    def engine(self):
        """The compiled :class:`~bayesdesign.student.engine.Engine` (built on first use)."""
        if self._engine is None:
            if sys.stderr.isatty() and not compiled_on_disk():
                print("bayesdesign: compiling the student's inference engine (once per machine, about 40 s)",
                      file=sys.stderr)
            self._engine = Engine(self.model)
        return self._engine

    def _uses_engine(self, batch: int) -> bool:
        if self.backend == "auto":
            return self.device.type == "cpu"
        return self.backend == "engine"

    @torch.inference_mode()
    def init(self, batch: int) -> StudentState:
        if self._uses_engine(batch):
            return self.engine.init(batch)
        if self.model.conj is not None:
            self.model.conj.check_torch(f"StudentPolicy(backend={self.backend!r}) on device {self.device.type}")
        cfg = self.model.cfg
        kv = torch.zeros((2 * cfg.n_layers, batch, 64, cfg.d_model), device=self.device)
        nk, nv = self.model.null_kv()
        kv[:, :, 0] = torch.stack([*nk, *nv])[:, None, :]  # the null token, always in the context
        conj = self.model.conj
        stats = None if conj is None else torch.zeros((batch, conj.n_stats), dtype=torch.float64, device=self.device)
        return StudentState(0, _KVCache(kv, 1), torch.zeros((batch, self.model.pool_dim), device=self.device), stats)

    def _tensor(self, v: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(v, dtype=torch.float32, device=self.device)

    @property
    def atom_share(self) -> float:
        """The teacher's ``atom`` share this student follows (0: no rule for outcomes with an atom)."""
        conj = self.model.conj
        return float(conj.atom) if conj is not None else 0.0

    def _atoms(self, state, y) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The running extremes after outcomes ``y`` (B, m) and which histories now have an atom
        (:func:`~bayesdesign.efficiency.has_atom` with the teacher's ``atom`` share; ``None`` when
        the rule has none). The extremes are ``None`` too unless the rule has an atom share or the
        tokens see atom features (``token_atom``: the running minimum)."""
        if not (self.atom_share or self.model.cfg.token_atom):
            return None, None
        y = np.asarray(y, float)
        ext = extremes_update(state.ext if state.ext is not None else extremes_init(len(y)), y)
        return ext, has_atom(ext, state.t + y.shape[-1], self.atom_share) if self.atom_share else None

    def update(self, state, x, a, y, pi):
        """Embed the new units ``x`` (B, m, d), ``a``, ``y`` (B, m) and append them to the cache."""
        sc = self.student.scaling
        a = np.asarray(a)
        engine = not isinstance(state, StudentState)
        if sc.in_context:  # tokens: standardized by the outcomes so far; the layer sums raw outcomes
            f = self.model.conj.f
            st = np.asarray(state.stats if engine else state.stats.cpu().numpy(), float).reshape(len(a), 2, -1)
            pooled = st[..., 0].sum(1), st[..., f * f].sum(1), st[..., f * f + f].sum(1)
            ylay = np.asarray(y, float)
            ys = running_standardize(ylay, *pooled).astype(np.float32)
        else:
            ylay = None
        if engine:
            low, inv = sc._box
            u = to_unit(np.asarray(x, float), low, inv)
            if ylay is None:
                ys = standardize(np.asarray(y, float), a, sc._y_maps[0], sc._y_maps[1], Y_CLAMP)
            return self.engine.update(state, u, a, np.asarray(ys, float), ylay, np.asarray(y, float))
        tok = None
        if self.model.cfg.token_atom:  # StudentConfig: only with in-context standardization
            low = np.full(len(a), np.inf) if state.ext is None else state.ext[:, 0]
            tok = self._tensor(running_atom(ylay, *pooled, low))
        ext, atom = self._atoms(state, y)
        with torch.inference_mode():
            new = self._update_torch(state, sc.to_unit(x), a, sc.standardize(y, a) if ylay is None else ys, ylay, atom,
                                     tok)
        return new._replace(ext=ext)

    def _update_torch(self, state: StudentState, u, a, ys, ylay=None, atom=None, tok=None) -> StudentState:
        u, ys, af = self._tensor(u), self._tensor(ys), self._tensor(a)
        keys, values, g = self.model.project(u, af, ys, tok)
        cache = state.cache.append(state.t + 1, torch.stack([*keys, *values]))
        stats = state.stats
        if stats is not None:
            yl = ys if ylay is None else torch.as_tensor(ylay, dtype=torch.float64, device=self.device)
            stats = stats + self.model.conj.unit_stats(u, af, yl).sum(1)
        t, gate_sum = state.t + u.shape[1], state.gate_sum + g.sum(1)
        n = torch.full((u.shape[0],), float(t), device=self.device)
        atom = None if atom is None else torch.as_tensor(atom, device=self.device)
        summary = self.model.summarize(Context([], [], gate_sum, n, None, stats, atom=atom))  # once per update
        return StudentState(t, cache, gate_sum, stats, summary, atom)

    def context(self, state: StudentState) -> Context:
        """The :class:`~bayesdesign.student.model.Context` of a ``torch``-backend state (views into the cache)."""
        kv = state.cache.kv[:, :, : state.t + 1]
        b = kv.shape[1]
        n = torch.full((b,), float(state.t), device=self.device)
        keys, values = list(kv[: self._layers]), list(kv[self._layers :])
        return Context(keys, values, state.gate_sum, n, None, state.stats, state.summary, state.atom)

    @torch.inference_mode()
    def outputs(self, state: StudentState, x: np.ndarray) -> dict[str, np.ndarray]:
        """All student outputs at ``x`` (B, m, d): ``pi`` (unclipped), ``log_sd_mean``,
        ``log_sd_sd``, ``class_prob`` (see :meth:`StudentModel.decide`); ``torch`` backend only."""
        if not isinstance(state, StudentState):
            raise ValueError(
                "outputs: this state comes from the compiled engine, which computes decisions only; "
                "use StudentPolicy(..., backend='torch') for every output"
            )
        out = self.model.decide(self.context(state), self._tensor(self.student.scaling.to_unit(x)))
        return {k: v.double().cpu().numpy() for k, v in out.items()}

    def _raw(self, state, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if state.t < self.burn_in:
            return np.full(x.shape[:-1], 0.5)
        if not isinstance(state, StudentState):
            return self.engine.decide(state, to_unit(np.asarray(x, float), *self.student.scaling._box))
        with torch.inference_mode():
            u = self._tensor(self.student.scaling.to_unit(x))
            return self.model.decide(self.context(state), u)["pi"].double().cpu().numpy()


PRETRAINED_DIMS = (1, 2, 3)
"""Covariate dimensions with a shipped unit-free student (``bayesdesign/pretrained/student-dD``: the
untrained student of ``unit-free-flex(-D)`` for ``teacher:mixture:unit-free-flex:lognormal``)."""


SHIPPED = {"pretrained-revenue": "student-revenue", "pretrained-student-t": "student-student-t"}
"""Shipped students distilled from NUTS teachers, by name: ``pretrained-revenue`` (the user model
:mod:`bayesdesign.examples_models.revenue`) and ``pretrained-student-t`` (the ``student-t`` prior)."""


def resolve_student_path(rest: str, d: int = 1) -> Path:
    """``pretrained`` -> the shipped unit-free student for ``d`` covariates
    (``bayesdesign/pretrained/student-dD``, D = 1, 2, 3); a name of :data:`SHIPPED` -> that shipped
    student; anything else a folder."""
    if rest in SHIPPED:
        path = Path(__file__).resolve().parent.parent / "pretrained" / SHIPPED[rest]
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"student {rest!r}: no shipped student at {path} (this installation has none)")
        return path
    if rest == "pretrained":
        if d not in PRETRAINED_DIMS:
            raise ValueError(
                f"design 'student:pretrained': dimension {d} not supported: shipped students take "
                f"{', '.join(map(str, PRETRAINED_DIMS))} covariate(s); train one on traces of your prior "
                "(bayesdesign distil) and use 'student:DIR'"
            )
        root = Path(__file__).resolve().parent.parent / "pretrained"
        path = root / f"student-d{d}"
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"design 'student:pretrained': no shipped student at {path} (this installation has none); "
                "train one with bayesdesign.student.distil (bayesdesign distil) and use 'student:DIR'"
            )
        return path
    return Path(rest).expanduser()


def load_policy(path: str | Path, prior=None, bounds=None, override: bool = False, device: str = "cpu",
                backend: str = "auto"):
    """A :class:`StudentPolicy` from a checkpoint folder (``'pretrained'`` for the shipped one of the
    dimension of ``bounds``, default one covariate); ``prior``, ``bounds``, ``override`` as in
    :func:`~bayesdesign.student.checkpoint.load_student`, ``device`` and ``backend`` as in
    :class:`StudentPolicy`."""
    if str(path) == "pretrained" or str(path) in SHIPPED:
        d = 1 if bounds is None else int(np.atleast_1d(np.asarray(bounds[0], float)).shape[0])
        folder = resolve_student_path(str(path), d)
    else:
        folder = Path(path)
    student = load_student(folder, prior=prior, bounds=bounds, override=override)
    policy = StudentPolicy(student, device=device, backend=backend)
    policy.name = f"student:{path}"
    return policy


def design_factory(rest: str, env, horizon: int) -> StudentPolicy:
    """``student:DIR`` (or ``student:pretrained``, chosen by the environment's number of covariates)
    for the runner. A student of a unit-free prior (``outcome.standardize``) takes the environment's
    declared box as its own; for others :func:`~bayesdesign.design.make_design` checks that the
    environment's box lies inside the box the student was trained on. Suffixes give the student
    the teachers' settings of the same name (:data:`~bayesdesign.design.registry.SUFFIXES`):
    ``student:pretrained:safe`` those of ``teacher:...:safe`` (the safe rule and the robust
    second-moment variance), ``:log-odds`` the log-odds rule, ``:reweight`` the reweighted
    second-moment regression (``TeacherConfig.reweight``; the compiled engine implements it, the
    backend ``auto`` uses on the CPU: ``student:pretrained:reweight`` decides as
    ``teacher:mixture:unit-free-flex:lognormal:reweight``); the settings are added to the student's
    own."""
    rest, settings = split_suffixes(rest)
    lo, hi = (np.atleast_1d(np.asarray(b, dtype=float)) for b in env.bounds)
    folder = resolve_student_path(rest, lo.shape[0])
    meta = read_config(folder)
    unit_free = bool(meta.get("scaling", {}).get("in_context", False))
    policy = load_policy(folder, bounds=(lo, hi) if unit_free else None)
    if settings.get("reweight"):
        family = policy.student.spec.family if policy.student.spec is not None else None
        if policy.model.conj is None or family not in ("gaussian", "student_t"):
            raise ValueError(
                f"design: student:{rest}:reweight: the reweighted second-moment regression needs a student "
                "with the conjugate layer on a continuous outcome family (gaussian, student_t); "
                f"this one has {'no conjugate layer' if policy.model.conj is None else f'family {family}'}"
            )
    if settings:
        policy.student.teacher_config.update(settings)
        if policy.model.conj is not None:
            policy.model.conj.set_rule(policy.student.teacher_config)
    return policy
