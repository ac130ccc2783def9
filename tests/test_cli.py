"""Command line: Matrix Market round trips, clear errors, info and a small demo."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from ssi_sparse.__main__ import main
from ssi_sparse.problems import diffusion_2d


@pytest.mark.parametrize("kind", ["grid", "non-grid"])
def test_solve_round_trip(tmp_path, kind):
    if kind == "grid":
        A = diffusion_2d(70, 65)  # above the engine's size threshold
    else:
        A = (sp.random(500, 500, density=0.02, random_state=0) + 10 * sp.identity(500)).tocsr()
    b = np.random.default_rng(0).standard_normal((A.shape[0], 2))
    scipy.io.mmwrite(tmp_path / "A.mtx", A)
    scipy.io.mmwrite(tmp_path / "b.mtx", b)
    assert main(["solve", str(tmp_path / "A.mtx"), str(tmp_path / "b.mtx"), "-o", str(tmp_path / "x.mtx"), "-q"]) == 0
    x = scipy.io.mmread(tmp_path / "x.mtx")
    assert x.shape == b.shape
    assert np.linalg.norm(A @ x - b) <= 1e-10 * np.linalg.norm(b)


def test_solve_with_grid_and_order(tmp_path):
    A = diffusion_2d(40, 30)  # row-major 40 x 30 == column-major 30 x 40
    scipy.io.mmwrite(tmp_path / "A.mtx", A)
    scipy.io.mmwrite(tmp_path / "b.mtx", np.ones((1200, 1)))
    main(["solve", str(tmp_path / "A.mtx"), str(tmp_path / "b.mtx"), "-o", str(tmp_path / "x.mtx"),
          "--grid", "30x40", "--order", "F", "-q"])
    x = scipy.io.mmread(tmp_path / "x.mtx")
    assert np.linalg.norm(A @ x - 1) <= 1e-10 * np.sqrt(1200)


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing", "no such file"),
        ("garbage", "as Matrix Market"),
        ("nonsquare", "must be square"),
        ("mismatch", "right-hand side has 7 rows"),
    ],
)
def test_solve_clear_errors(tmp_path, setup, message, capsys):
    A = diffusion_2d(5, 6)
    scipy.io.mmwrite(tmp_path / "A.mtx", A if setup != "nonsquare" else sp.random(5, 6, density=0.5))
    scipy.io.mmwrite(tmp_path / "b.mtx", np.ones((7 if setup == "mismatch" else 30, 1)))
    if setup == "garbage":
        (tmp_path / "A.mtx").write_text("not a matrix\n")
    path = tmp_path / ("nothere.mtx" if setup == "missing" else "A.mtx")
    with pytest.raises(SystemExit) as info:
        main(["solve", str(path), str(tmp_path / "b.mtx"), "-o", str(tmp_path / "x.mtx")])
    assert message in str(info.value)


def test_info_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "ssi_sparse", "info"], capture_output=True, text=True)
    assert out.returncode == 0 and "numpy" in out.stdout and "backend" in out.stdout


def test_demo_small(capsys):
    main(["demo", "--size", "65"])
    out = capsys.readouterr().out
    assert "speed-up" in out and "residual" in out and "refactorize" in out
