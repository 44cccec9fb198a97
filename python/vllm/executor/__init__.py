"""Executors: how one engine replica's model runs over several processes."""
