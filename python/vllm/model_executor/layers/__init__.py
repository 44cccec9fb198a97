"""Layers shared by the model families; each calls our kernels."""
