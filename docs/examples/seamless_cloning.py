"""Seamless cloning (Poisson image editing) of an irregular region of one photo into another.

    pip install ssi-sparse scikit-image matplotlib
    python docs/examples/seamless_cloning.py            # writes docs/seamless_cloning.png

Inside the mask the result f solves the discrete Poisson equation  4 f_p - sum_q f_q =
sum_q (g_p - g_q)  (the source's gradients as guidance), with the target's pixels as Dirichlet
values outside: the 5-point Laplacian on the pixels of the mask, numbered as
``np.flatnonzero(mask)``, the way such code is written.  ``ssi_sparse.spsolve`` finds the
masked grid in that matrix by itself; the same call through SciPy is timed next to it.
"""

from __future__ import annotations

import os
import time

import numpy as np
import scipy.sparse.linalg as spla
from skimage import data, transform

import ssi_sparse
from ssi_sparse.problems import blob_mask, masked_laplacian


def poisson_blend(source, target, mask, solve):
    """Blend ``source`` into ``target`` inside ``mask`` (all H x W x 3 floats); one solve with
    three right-hand sides (the colour channels)."""
    A = masked_laplacian(mask)
    inside = np.flatnonzero(mask)
    H, W = mask.shape
    r, c = np.divmod(inside, W)
    b = np.zeros((inside.size, 3))
    for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        rq, cq = np.clip(r + dr, 0, H - 1), np.clip(c + dc, 0, W - 1)
        b += source[r, c] - source[rq, cq]  # guidance: the source's gradients
        outside = ~mask[rq, cq]
        b[outside] += target[rq[outside], cq[outside]]  # Dirichlet values from the target
    t = time.perf_counter()
    x = solve(A, b)
    seconds = time.perf_counter() - t
    out = target.copy()
    out[r, c] = np.clip(x, 0, 1)
    return out, seconds, A.shape[0]


def main(path=os.path.join(os.path.dirname(__file__), "..", "seamless_cloning.png")):
    target = transform.resize(data.chelsea(), (512, 512), anti_aliasing=True)
    source = transform.resize(data.astronaut(), (512, 512), anti_aliasing=True)
    source = np.roll(source, (-40, 0), axis=(0, 1))  # the astronaut's face over the cat's head
    mask = blob_mask(512, 512, fill=0.42)
    ours, t_ours, n = poisson_blend(source, target, mask, ssi_sparse.spsolve)
    theirs, t_scipy, _ = poisson_blend(source, target, mask,
                                       lambda A, b: spla.spsolve(A.tocsc(), b))
    diff = np.abs(ours - theirs).max()
    print(f"{n} unknowns x 3 channels: ssi_sparse.spsolve {t_ours:.2f} s, scipy spsolve "
          f"{t_scipy:.2f} s ({t_scipy / t_ours:.1f}x), max pixel difference {diff:.1e}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    naive = target.copy()
    naive[mask] = source[mask]
    fig, ax = plt.subplots(1, 3, figsize=(12, 4.3))
    for a, img, title in zip(ax, (naive, ours, theirs), (
            "pasted (mask boundary visible)", f"ssi_sparse.spsolve: {t_ours:.2f} s",
            f"scipy spsolve: {t_scipy:.2f} s")):
        a.imshow(img)
        a.set_title(title)
        a.axis("off")
    fig.suptitle(f"Seamless cloning, {n} unknowns in an irregular mask (first calls, this machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
