"""`bayesdesign demo` (what `make demo` runs): the pretrained student against the baselines, without
training, with a table, a plot and a report."""

import xarray as xr
from click.testing import CliRunner

from bayesdesign.cli import main


def test_demo_runs_the_pretrained_student_end_to_end(tmp_path):
    res = CliRunner().invoke(main, ["demo", "-T", "80", "-R", "6", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "student:pretrained" in res.output and "oracle" in res.output
    ds = xr.open_dataset(tmp_path / "results.nc")
    assert "student:pretrained" in ds.design.values and ds.sizes["t"] == 80
    assert (tmp_path / "pi_over_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "report.html").read_text()
    assert "student:pretrained" in html and html.count("data:image/png;base64,") >= 2
