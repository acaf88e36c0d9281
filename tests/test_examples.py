"""Every script in examples/ runs in its quick mode and prints what it promises.

Each example is run as a user would run it (``python examples/NAME.py --quick``) in a fresh
process whose working directory and temporary folder are the test's own, so nothing is written
into the repository. New examples are picked up by the glob; ``EXPECTED`` names a line each known
example must print: what it promises, not merely some output (an example not listed must succeed
and print something).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))

EXPECTED = {
    "compare_designs.py": r"plugin-neyman\s+\S+\s+\S+",
    "custom_environment.py": r"analysed log: ATE .* 95% CI \[",
    "quickstart.py": r"analysed .*log\.csv: ATE .* 95% CI \[",
    "own_numpyro_model.py": r"posterior Neyman pi_T(\s+0\.\d+){5}",
    "distil_own_teacher.py": r"held-out imitation error mean \|pi_S - pi_T\|: \d\.\d+",
    # quick mode: the conjugate teacher with known noise sd, whose mean posterior is exact and whose plug-in sigma
    # is not a posterior (SBC must tell them apart), then coverage rows and the report
    "diagnostics.py": r"sigma_0\s+FAIL[^\n]*\n\s*sigma_1\s+FAIL[^\n]*\n\s*mu_0\s+pass[^\n]*\n\s*mu_1\s+pass"
    r"[\s\S]*S2\s+plugin-neyman\s+40\s[\s\S]*report: \S+report\.html",
}


def test_examples_found():
    assert {"quickstart.py", "own_numpyro_model.py", "distil_own_teacher.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_example_runs_quick(script: Path, tmp_path: Path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore::FutureWarning"}
    # one torch/OpenMP thread: the examples' small networks run 3-4x slower when their threads compete with
    # other processes for two cores (the student design on S3: 18 s with the default, 5 s with one thread)
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, str(script), "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    tail = f"\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{script.name} --quick exited with {proc.returncode}{tail}"
    pattern = EXPECTED.get(script.name, r"\S")
    assert re.search(pattern, proc.stdout), f"{script.name}: expected output matching {pattern!r}{tail}"
