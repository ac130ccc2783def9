"""``patch_scipy``: unmodified programs and libraries call ssi_sparse through SciPy's names.

Libraries bind SciPy's solvers at import (``from scipy.sparse.linalg import spsolve``), so
replacing the attribute of ``scipy.sparse.linalg`` alone reaches nobody who imported first:
every loaded module whose global *is* SciPy's function gets ours, and exactly those bindings
go back on undo (plus the ones modules imported while patched took from SciPy).
"""

from __future__ import annotations

import sys

from . import fallback as _fallback
from .frontend import factorized, spsolve

__all__ = ["patch_scipy"]

_OURS = {"spsolve": spsolve, "factorized": factorized}
_SCIPY = {"spsolve": _fallback.scipy_spsolve, "factorized": _fallback.scipy_factorized}

_active = []  # the one applied patch's record while any handle is open, and the count


def _own(name: str) -> bool:
    return name == "ssi_sparse" or name.startswith("ssi_sparse.")


def _bindings(value_of, modules):
    """``(module, attribute, value)`` for every module global that is one of ``value_of``'s
    functions (compared by identity: a module's own function of the same name is left)."""
    wanted = {id(f): name for name, f in value_of.items()}
    found = []
    for mod_name, module in modules:
        if module is None or _own(mod_name):
            continue  # our front end and fallback keep calling what they mean
        try:
            items = list(vars(module).items())
        except TypeError:
            continue
        for attr, value in items:
            # (the defining module's own global stays: its functions' namespace)
            if id(value) in wanted and value.__module__ != mod_name:
                found.append((module, attr, wanted[id(value)]))
    return found


class patch_scipy:
    """Make ``scipy.sparse.linalg.spsolve`` and ``factorized`` resolve to ssi_sparse's.

    Applies when called; undone by :meth:`undo` or at the end of a ``with`` block.  Every
    module already imported that bound SciPy's function to a name (``from
    scipy.sparse.linalg import spsolve``) sees ours too, so libraries such as scikit-image
    speed up unchanged; matrices that are not grid operators still go to SciPy, which answers
    exactly as without the patch.  Nested patches are counted: the last undo restores.

    Examples
    --------
    >>> import numpy as np, scipy.sparse.linalg
    >>> import ssi_sparse
    >>> from ssi_sparse.problems import diffusion_2d
    >>> A, b = diffusion_2d(100, 100), np.ones(10_000)
    >>> with ssi_sparse.patch_scipy():
    ...     x = scipy.sparse.linalg.spsolve(A, b)        # ssi_sparse's engine
    >>> scipy.sparse.linalg.spsolve is ssi_sparse.spsolve
    False
    >>> patch = ssi_sparse.patch_scipy()                # or as a plain call ...
    >>> patch.undo()                                    # ... with an undo
    """

    def __init__(self):
        self._open = True
        if _active:
            _active[1] += 1
            return
        before = set(sys.modules)
        replaced = _bindings(_SCIPY, list(sys.modules.items()))
        for module, attr, name in replaced:
            setattr(module, attr, _OURS[name])
        _active[:] = [(replaced, before), 1]

    def undo(self) -> None:
        """Restore SciPy's functions (idempotent; the last open patch restores)."""
        if not self._open:
            return
        self._open = False
        _active[1] -= 1
        if _active[1]:
            return
        (replaced, before), _ = _active
        _active.clear()
        for module, attr, name in replaced:
            if getattr(module, attr, None) is _OURS[name]:
                setattr(module, attr, _SCIPY[name])
        # modules first imported while patched took ours from SciPy's namespace
        later = [(m, sys.modules.get(m)) for m in set(sys.modules) - before]
        for module, attr, name in _bindings(_OURS, later):
            setattr(module, attr, _SCIPY[name])

    @staticmethod
    def active() -> bool:
        """Whether a patch is applied now."""
        return bool(_active)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.undo()
        return False

    def __repr__(self) -> str:
        state = "applied" if self._open else "undone"
        return f"<ssi_sparse.patch_scipy ({state}): {', '.join(sorted(_OURS))}>"

