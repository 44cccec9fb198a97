"""Attention backends: how a layer writes the paged KV cache and attends."""
