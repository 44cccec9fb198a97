"""Scheduling over the paged KV cache: requests, blocks, prefix hashing and
the scheduler. Pure Python, no tensors."""
