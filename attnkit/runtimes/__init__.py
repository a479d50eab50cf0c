"""Runtimes: one Runner per backend, shared by verify and bench (see base.py)."""
