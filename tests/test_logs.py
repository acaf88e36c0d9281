"""Reading logs: each malformed input a new user hits gets a message naming the file, the column
and the row; covariates are never chosen silently (the CLI says which, and refuses id-like and
non-numeric columns)."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from bayesdesign.cli import main
from bayesdesign.design.replay import ReplayEnvironment
from bayesdesign.estimation import aipw, analyze
from bayesdesign.logs import choose_covariates, read_units


def _log(rng, t=300):
    x = rng.uniform(size=t)
    a = rng.integers(0, 2, t)
    return pd.DataFrame({"x": x, "a": a, "y": 5.0 * a + 2.0 * x + rng.standard_normal(t), "pi": 0.5})


def _analyze(*args):
    return CliRunner().invoke(main, ["analyze", *map(str, args)])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", r"empty.csv: the file is empty; expected a CSV table with a header row"),
        ("header.csv", b"x,a,y,pi\n", r"header.csv: no rows \(only the header \['x', 'a', 'y', 'pi'\]\); expected"),
        ("image.png", b"\x89PNG\r\n\0\0", r"image.png: not a text CSV file \(byte 0x89 at position 0 is not UTF-8"),
        ("bad.parquet", b"not parquet", r"bad.parquet: not a readable parquet file"),
    ],
)
def test_unreadable_files_are_named(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        analyze(path)
    res = _analyze(path)
    assert res.exit_code == 2 and res.output.startswith(f"error: {path}:")


def test_bad_columns_name_the_column_and_the_line(tmp_path, rng):
    df = _log(rng)
    path = tmp_path / "log.csv"
    df.assign(when="2025-10-01 00:00:00").to_csv(path, index=False)
    with pytest.raises(
        ValueError,
        match=r"log.csv: column 'when' is not numeric \(line 2: '2025-10-01 00:00:00'\); expected numbers, so it "
        r"cannot be taken as a covariate; name the covariate columns, e.g. --covariates x",
    ):
        analyze(path)
    with pytest.raises(ValueError, match=r"column 'when' is not numeric \(line 2: "):
        analyze(path, covariates=["x", "when"])
    df.assign(pi=np.where(np.arange(len(df)) == 5, 0.0, 0.5)).to_csv(path, index=False)
    with pytest.raises(
        ValueError,
        match=r"^\S*log.csv: column 'pi': expected treatment probabilities strictly inside \(0, 1\), found 1 outside "
        r"\(first at line 7: 0.0\)$",
    ):
        analyze(path)
    df.assign(y=np.where(np.arange(len(df)) == 9, np.nan, df.y)).to_parquet(tmp_path / "log.parquet")
    with pytest.raises(ValueError, match=r"log.parquet: column 'y': expected finite numbers, found 1 NaN .*row 9\)"):
        analyze(tmp_path / "log.parquet")
    with pytest.raises(ValueError, match=r"^table: column 'a': expected arms coded 0 .* found \[2\] \(first at row 3"):
        analyze(df.assign(a=np.where(np.arange(len(df)) == 3, 2, df.a)))


def test_one_arm_and_too_few_units_say_so(rng):
    df = _log(rng, 40)
    with pytest.raises(ValueError, match=r"^table: column 'a': no unit was treated \(all 40 units in arm 0\)"):
        analyze(df.assign(a=0))
    with pytest.raises(ValueError, match=r"column 'a': every unit was treated"):
        analyze(df.assign(a=1))
    few = df.assign(a=np.r_[1, 1, 0, 0, np.ones(36, int)])  # two controls: no unit ever scored
    with pytest.raises(
        ValueError,
        match=r"^table: too few units to score: a unit is scored only once 3 earlier units of each arm have been "
        r"observed, and at least 2 must be scored; found 38 treated and 2 control units, 0 scored",
    ):
        analyze(few)


def test_covariates_are_never_chosen_silently(tmp_path, rng):
    df = _log(rng)
    ids = df.assign(visitor_id=np.arange(10_000, 10_000 + len(df)))
    with pytest.raises(ValueError, match=r"column 'visitor_id' looks like an identifier .* --covariates x "):
        analyze(ids)
    # named explicitly, the same column is the user's choice
    assert analyze(ids, covariates=["x"])["ate"] == pytest.approx(analyze(df)["ate"])
    assert choose_covariates(ids, None, ("a", "y", "pi", "visitor_id")) == ["x"]
    # a float column that happens to be distinct in every row is a covariate, not an id
    assert choose_covariates(df, None, ("a", "y", "pi")) == ["x"]
    path = tmp_path / "log.csv"
    df.assign(z=rng.normal(size=len(df))).to_csv(path, index=False)
    res = _analyze(path, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["covariates"] == ["x", "z"]
    res = _analyze(path)
    assert "covariates x, z (every other numeric column; choose with --covariates)" in res.output
    assert "the first" in res.output and "3 units of each arm" in res.output
    ids.to_csv(path, index=False)
    res = _analyze(path)
    assert res.exit_code == 2 and "'visitor_id' looks like an identifier" in res.output


def test_the_se_note_appears_exactly_when_aipw_se_exceeds_the_dim_se(tmp_path, rng):
    t = 300
    x = rng.uniform(size=t)
    pi = np.where(x > 0.5, 0.9, 0.1)  # extreme propensities: large 1/pi weights
    a = (rng.uniform(size=t) < pi).astype(int)
    df = pd.DataFrame({"x": x, "a": a, "y": a + rng.standard_normal(t), "pi": pi})
    path = tmp_path / "log.csv"
    df.to_csv(path, index=False)
    res = analyze(path)
    assert res["se"] > res["dim_se"]
    assert "note: the AIPW se exceeds the difference in means'" in _analyze(path).output
    df.assign(pi=0.5, a=rng.integers(0, 2, t)).to_csv(path, index=False)
    res = analyze(path)
    assert res["se"] <= res["dim_se"]
    assert "note:" not in _analyze(path).output


def test_replay_takes_propensity_out_of_the_covariates(tmp_path, rng):
    df = _log(rng)
    path = tmp_path / "trial.csv"
    df.to_csv(path, index=False)
    env = ReplayEnvironment(path, None, propensity="pi")
    assert env.covariates == ["x"] and env.d == 1
    df.rename(columns={"pi": "p_treat"}).to_csv(path, index=False)
    res = CliRunner().invoke(
        main,
        ["simulate", "--replay", str(path), "--propensity", "p_treat", "--designs", "uniform", "-T", "60", "-R", "2",
         "--json"],
    )
    assert res.exit_code == 0, res.output
    assert "replay " in res.stderr and "covariates x (every other numeric column" in res.stderr
    assert set(json.loads(res.stdout)) == {"uniform", "oracle"}
    # without --propensity, the constant column p_treat would be a covariate: say so
    res = CliRunner().invoke(main, ["simulate", "--replay", str(path), "--designs", "uniform", "-T", "60", "-R", "2"])
    assert res.exit_code == 0 and "covariates x, p_treat" in res.stderr
    df.assign(uid=np.arange(len(df))).to_csv(path, index=False)
    res = CliRunner().invoke(main, ["simulate", "--replay", str(path), "-T", "60", "-R", "1"])
    assert res.exit_code == 2 and "column 'uid' looks like an identifier" in res.output


def test_read_units_matches_the_columns(rng):
    df = _log(rng, 50)
    units = read_units(df)
    np.testing.assert_array_equal(units.x[:, 0], df.x.to_numpy())
    np.testing.assert_array_equal(units.a, df.a.to_numpy())
    ref = aipw(units.x, units.a, units.y, units.pi)
    assert analyze(df)["ate"] == pytest.approx(float(ref.estimate))
