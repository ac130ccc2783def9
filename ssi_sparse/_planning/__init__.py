"""Symbolic phase: the box tree of a grid (full, masked, or split across processes) and every
index map, from the shape (and mask) alone.
"""
