"""scikit-image's random-walker segmentation, unchanged, under ``ssi_sparse.patch_scipy()``.

    pip install ssi-sparse scikit-image matplotlib
    python docs/examples/random_walker_segmentation.py   # writes docs/random_walker.png

``random_walker(mode='bf')`` builds the weighted graph Laplacian of the image, deletes the
seeded pixels' rows and columns and calls ``scipy.sparse.linalg.spsolve``: a masked grid
(unknowns: the unseeded pixels) that ssi_sparse recognizes from the pattern alone.  The
library is not modified: the patch makes its ``spsolve`` resolve to ours, then restores it.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from skimage.segmentation import random_walker

import ssi_sparse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
from bench_masked import camera_and_scribbles  # noqa: E402  (the benchmark's seeds)


def main(path=os.path.join(os.path.dirname(__file__), "..", "random_walker.png")):
    img, markers = camera_and_scribbles()
    t = time.perf_counter()
    with ssi_sparse.patch_scipy():
        ours = random_walker(img, markers, beta=130, mode="bf")
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    theirs = random_walker(img, markers, beta=130, mode="bf")
    t_scipy = time.perf_counter() - t
    same = np.array_equal(ours, theirs)
    print(f"random_walker end to end: under patch_scipy {t_ours:.2f} s, plain {t_scipy:.2f} s "
          f"({t_scipy / t_ours:.1f}x); labels identical: {same}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 4.7))
    ax[0].imshow(img, cmap="gray")
    ax[0].imshow(np.ma.masked_equal(markers, 0), cmap="coolwarm", alpha=0.9, interpolation="none")
    ax[0].set_title("photo and scribbles")
    ax[1].imshow(img, cmap="gray")
    ax[1].imshow(ours == 1, cmap="Reds", alpha=0.45)
    ax[1].set_title(f"labels: {t_ours:.2f} s patched, {t_scipy:.2f} s SciPy")
    for a in ax:
        a.axis("off")
    fig.suptitle(f"random_walker(mode='bf'), {int((markers == 0).sum())} unknowns; labels "
                 f"identical: {same}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
