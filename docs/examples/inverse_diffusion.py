"""Recover a spatially varying diffusion coefficient by gradient descent through the solver.

    pip install 'ssi-sparse[torch]' matplotlib
    python docs/examples/inverse_diffusion.py            # writes docs/inverse_diffusion.png

Forward model: -div(c grad u_k) = f_k on an N x N grid (Dirichlet boundary), for a few source
terms f_k.  We observe u_k (with a little noise) and fit log c by Adam, backpropagating
through ``ssi_sparse.torch.SparseSolve``: every step is one factorization (forward) and one
reused transposed solve (backward).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

import ssi_sparse.torch as sst

N = 48
torch.manual_seed(0)
rng = np.random.default_rng(0)


def grid_edges(n):
    """Index pairs (i, j) of horizontal and vertical neighbours of a row-major n x n grid."""
    ids = np.arange(n * n).reshape(n, n)
    pairs = np.concatenate(
        [np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()]), np.stack([ids[:-1, :].ravel(), ids[1:, :].ravel()])],
        axis=1,
    )
    ghosts = 4 - np.bincount(pairs.ravel(), minlength=n * n)  # missing neighbours -> Dirichlet
    return torch.tensor(pairs), torch.tensor(ghosts, dtype=torch.float64)


PAIRS, GHOSTS = grid_edges(N)
DIAG = torch.arange(N * N)
INDICES = torch.cat([PAIRS, PAIRS.flip(0), torch.stack([DIAG, DIAG])], dim=1)


def stencil_values(log_c):
    """Values (aligned with INDICES) of the diffusion matrix for coefficient exp(log_c)."""
    c = log_c.exp().reshape(-1)
    w = 0.5 * (c[PAIRS[0]] + c[PAIRS[1]])
    diag = torch.zeros(N * N, dtype=c.dtype).index_add(0, PAIRS[0], w).index_add(0, PAIRS[1], w)
    diag = diag + GHOSTS * c
    return torch.cat([-w, -w, diag])


# ground truth: two inclusions in a smooth background, coefficients spanning 30x
y, x = np.mgrid[0:N, 0:N] / (N - 1)
true_c = 1.0 + 0.5 * np.sin(3 * x) * np.cos(2 * y)
true_c[(x - 0.3) ** 2 + (y - 0.35) ** 2 < 0.02] = 10.0
true_c[np.abs(x - 0.7) + np.abs(y - 0.65) < 0.15] = 0.3
log_c_true = torch.tensor(np.log(true_c))

# sources: a few smooth bumps plus a constant
centres = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75), (0.5, 0.5)]
F = np.stack([np.exp(-((x - a) ** 2 + (y - b) ** 2) / 0.01).ravel() for a, b in centres] + [np.ones(N * N)], axis=1)
F = torch.tensor(F)

layer = sst.SparseSolve(INDICES, (N * N, N * N))
with torch.no_grad():
    U_obs = layer(stencil_values(log_c_true), F)
    U_obs = U_obs + 1e-4 * U_obs.abs().max() * torch.randn_like(U_obs)

log_c = torch.zeros(N, N, dtype=torch.float64, requires_grad=True)  # initial guess c = 1
optimizer = torch.optim.Adam([log_c], lr=0.05)


def smoothness(v):
    return ((v[1:, :] - v[:-1, :]) ** 2).sum() + ((v[:, 1:] - v[:, :-1]) ** 2).sum()


losses = []
t0 = time.perf_counter()
for step in range(300):
    optimizer.zero_grad()
    U = layer(stencil_values(log_c), F)
    misfit = ((U - U_obs) ** 2).sum() / (U_obs**2).sum()
    loss = misfit + 1e-5 * smoothness(log_c)
    loss.backward()
    optimizer.step()
    losses.append(float(misfit.detach()))
elapsed = time.perf_counter() - t0
rel_err = float((log_c.detach().exp() - torch.tensor(true_c)).norm() / torch.tensor(true_c).norm())
print(f"{len(losses)} steps in {elapsed:.1f} s ({1e3 * elapsed / len(losses):.1f} ms per forward+backward "
      f"on {N}x{N}); data misfit {losses[0]:.2e} -> {losses[-1]:.2e}; "
      f"relative coefficient error {rel_err:.3f}")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
vmin, vmax = true_c.min(), true_c.max()
for ax, img, title in zip(
    axes,
    [true_c, np.ones_like(true_c), log_c.detach().exp().numpy()],
    ["true coefficient c", "initial guess", f"recovered (rel. error {rel_err:.2f})"],
):
    im = ax.imshow(img, cmap="viridis", norm=matplotlib.colors.LogNorm(vmin=vmin, vmax=vmax))
    ax.set_title(title)
    ax.axis("off")
fig.colorbar(im, ax=axes[:3], shrink=0.8)
axes[3].semilogy(losses)
axes[3].set_xlabel("Adam step")
axes[3].set_title("relative data misfit")
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "inverse_diffusion.png")
fig.savefig(out, dpi=110, bbox_inches="tight")
print(f"wrote {os.path.normpath(out)}")
