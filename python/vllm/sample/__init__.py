"""Turning logits into tokens (and logprobs)."""
