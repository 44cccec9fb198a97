"""Finding models offline and reading their configs, weights and tokenizers."""
