"""Structure detection: is a sparse matrix a stencil operator on (some pixels of) a grid,
and the stencil vocabulary (offsets, slots, equilibration, products) every layer shares.
"""
