"""The HTML report: inputs recognised by content, bad files named, and the page renders in
headless Chromium with every figure present."""

import base64
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from test_student_checkpoint import make_checkpoint

from bayesdesign.cli import main
from bayesdesign.design import get_scenario, simulate
from bayesdesign.diagnostics.calibration import student_calibration
from bayesdesign.diagnostics.report import build_report, identify, write_report
from bayesdesign.diagnostics.sbc import constant_sd_prior, known_variance_config, run_sbc
from bayesdesign.io import save_dataset
from bayesdesign.traces import generate_traces

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    res = simulate(get_scenario("S2"), ["uniform", "plugin-neyman"], horizon=120, reps=30, seed=0, keep_units=3)
    save_dataset(res, base / "results.nc")
    sbc = run_sbc(
        constant_sd_prior("beta2"),
        "conjugate",
        sims=40,
        units=20,
        draws=30,
        teacher_kwargs={"config": known_variance_config()},
    )
    save_dataset(sbc, base / "sbc.nc")
    make_checkpoint(base / "student")
    traces = generate_traces(
        "smoothness-mixture", "mixture", tasks=12, horizon=20, queries=2, out=base / "t.nc", refit_every=10, seed=4
    )
    save_dataset(student_calibration(base / "student", traces), base / "pit.nc")
    return base


def _pngs(html_text):
    uris = re.findall(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_text)
    out = []
    for u in uris:
        data = base64.b64decode(u)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
        out.append((len(data), width, height))
    return out


@pytest.fixture(scope="module")
def page(inputs):
    """The report of all three inputs, written by the command."""
    out = inputs / "report.html"
    res = CliRunner().invoke(
        main, ["report", str(inputs / "results.nc"), str(inputs / "sbc.nc"), str(inputs / "pit.nc"), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    return out


def test_report_has_every_section_and_no_external_asset(inputs, page):
    paths = [inputs / "results.nc", inputs / "sbc.nc", inputs / "pit.nc"]
    assert [identify(xr.open_dataset(p, engine="h5netcdf"), p) for p in paths] == [
        "results",
        "sbc",
        "student-calibration",
    ]
    text = page.read_text()
    for heading in (
        "Design comparison: S2",
        "Interval coverage",
        "Simulation-based calibration: conjugate",
        "Student calibration: smoothness-mixture",
    ):
        assert heading in text
    # results: pi(x) over time, coverage; SBC: ECDF; student: PIT, gate reliability, imitation
    pngs = _pngs(text)
    assert len(pngs) == 6 and all(n > 1000 and w > 100 and h > 100 for n, w, h in pngs)
    assert not re.search(r'(src|href)="(https?:|//|file:)', text)
    # any subset is accepted
    assert len(_pngs(build_report([inputs / "sbc.nc"]))) == 1


def test_bad_inputs_are_named(inputs, tmp_path):
    other = tmp_path / "other.nc"
    save_dataset(xr.Dataset({"v": ("i", np.arange(3))}), other)
    with pytest.raises(ValueError, match="other.nc: not a report input"):
        build_report([inputs / "sbc.nc", other])
    text_file = tmp_path / "notes.nc"
    text_file.write_text("hello")
    res = CliRunner().invoke(main, ["report", str(text_file), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 2 and "notes.nc" in res.output and not (tmp_path / "r.html").exists()
    res = CliRunner().invoke(main, ["report", str(tmp_path / "missing.nc"), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 2 and "missing.nc" in res.output


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (make test installs it when it can: apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(page, tmp_path):
    out = page
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Interval coverage" in dom.stdout and "Student calibration" in dom.stdout
    pngs = _pngs(dom.stdout)
    assert len(pngs) == 6 and all(n > 1000 and w > 100 and h > 100 for n, w, h in pngs)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,3000", out.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_write_report_is_atomic(inputs, tmp_path):
    out = tmp_path / "r.html"
    out.write_text("old")
    with pytest.raises(ValueError):
        write_report([], out)
    assert out.read_text() == "old"
    write_report([inputs / "sbc.nc"], out)
    assert out.read_text().startswith("<!DOCTYPE html>")


class _Plane:
    """d = 2: sd_1 = 1 + 2 x_0 x_1, sd_0 = 1, mu = 0, ATE 0 (a rule over two covariates)."""

    d, bounds, ate = 2, (np.zeros(2), np.ones(2)), 0.0

    def sample_covariates(self, rng, n):
        return rng.uniform(size=(n, 2))

    def sample_outcomes(self, rng, x, arm):
        return self.sd(x, arm) * rng.standard_normal(x.shape[:-1])

    def mean(self, x, arm):
        return np.zeros(x.shape[:-1])

    def sd(self, x, arm):
        return np.where(np.asarray(arm) == 1, 1.0 + 2.0 * x[..., 0] * x[..., 1], 1.0)


def test_results_only_report_states_the_truth_and_no_ecdf(tmp_path):
    from bayesdesign.diagnostics.plots import plot_pi_over_time

    res = simulate(get_scenario("S2"), ["uniform"], horizon=60, reps=3, seed=0, keep_units=1)
    save_dataset(res, tmp_path / "r.nc")
    text = build_report([tmp_path / "r.nc"])
    assert "True ATE 1, in the outcome's units" in text  # S2: tau(x) = 1 everywhere
    assert "ECDF" not in text
    # d = 2: the right panel is pi_t against pi*(x_t) per unit, the oracle on the diagonal
    ds = simulate(_Plane(), ["plugin-neyman"], horizon=80, reps=2, seed=1, keep_units=1)
    ax = plot_pi_over_time(ds).axes[1]
    offsets = ax.collections[0].get_offsets()
    tail = slice(60, 80)
    x = ds.x.isel(unit_rep=0).values[tail]
    star = (1 + 2 * x[:, 0] * x[:, 1]) / (2 + 2 * x[:, 0] * x[:, 1])  # the Neyman rule by hand
    np.testing.assert_allclose(offsets[:, 0], star)
    np.testing.assert_allclose(offsets[:, 1], ds.pi.sel(design="plugin-neyman").isel(unit_rep=0).values[tail])
    assert ax.get_xlabel().startswith("oracle pi*(x_t)") and list(ax.lines[0].get_xydata()[:, 0]) == [0, 1]
