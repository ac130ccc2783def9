"""The engine runs on any array namespace: every test body runs on NumPy and on
array_api_strict (the Python array API standard, strictly) and the results are compared.

A call that is not portable (NumPy-only indexing, methods, dtype attributes) fails here, long
before anyone reaches a GPU.  The same code will run on CuPy.
"""

import numpy as np
import pytest

xs = pytest.importorskip("array_api_strict")

from ssi_sparse._engine.walks import factorize_values, solve_values  # noqa: E402
from ssi_sparse._structure.grid import grid_stencil  # noqa: E402
from ssi_sparse._planning.plan import build_plan  # noqa: E402
from ssi_sparse._structure.stencil import equilibrate, is_hermitian, stencil_matvec, transpose_stencil  # noqa: E402
from ssi_sparse.problems import convection_diffusion_2d, helmholtz_2d, random_spd_9pt  # noqa: E402

CASES = {
    "nonsym 13x17": (lambda: convection_diffusion_2d(13, 17, 5.0), np.float64),
    "spd9 9x22": (lambda: random_spd_9pt(9, 22), np.float64),
    "strip 1x40": (lambda: convection_diffusion_2d(1, 40, 2.0), np.float64),
    "complex 11x6": (lambda: helmholtz_2d(11, 6, kh=0.3).astype(np.complex128) * (1 + 0.5j), np.complex128),
    "float32 20x20": (lambda: random_spd_9pt(20, 20, seed=2), np.float32),
    # large enough for row chunks on the thread pool
    "chunked 300x300": (lambda: convection_diffusion_2d(300, 300, 1.0), np.float64),
}


def both(fn, *arrays):
    """fn run on NumPy arrays and on array_api_strict arrays; results as NumPy."""
    out_np = fn(np, *arrays)
    out_xs = fn(xs, *(xs.asarray(a) for a in arrays))
    return out_np, out_xs


def close(a, b, dtype):
    tol = 1e-5 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-12
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(b, a, rtol=tol, atol=tol * max(1.0, float(np.abs(a).max())))


@pytest.mark.parametrize("name", sorted(CASES))
def test_engine_same_on_numpy_and_array_api_strict(name):
    make, dtype = CASES[name]
    spec, V = grid_stencil(make())
    V = V.astype(dtype)
    shape = spec.engine_shape
    plan = build_plan(*shape, 5)
    b = np.random.default_rng(0).standard_normal((V.shape[0], 3)).astype(dtype)

    def run(xp, V, b):
        Vs, _ = equilibrate(xp, V, shape)
        factor = factorize_values(plan, Vs, is_hermitian(xp, Vs, shape), 10.0, xp)
        Vt = transpose_stencil(xp, V, shape)
        return [solve_values(factor, b, t, xp) for t in "NTH"] + [
            stencil_matvec(xp, V, shape, b),
            stencil_matvec(xp, Vt, shape, b),
        ]

    for got_np, got_xs in zip(*both(run, V, b)):
        close(got_np, got_xs, dtype)
