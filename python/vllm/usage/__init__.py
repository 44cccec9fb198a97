"""Anonymous usage statistics (on by default, as in vLLM; opt-outs below)."""
