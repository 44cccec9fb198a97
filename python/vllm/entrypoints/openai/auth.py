"""API keys of the server: several may be valid (--api-key repeated or a
comma list, as vLLM allows), and a presented key is checked against every
one in constant time (vLLM's CVE-2025-59425: `!=` leaked how much of a
guess was right). Only routes under /v1 need a key, as in vLLM."""
from __future__ import annotations

import hashlib
import secrets


def split_keys(values: list[str] | str | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [key.strip() for value in values for key in value.split(",") if key.strip()]


def _digest(key: str) -> bytes:
    # Fixed-length digests: compare_digest then leaks not even the length.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._digests = [_digest(key) for key in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def accepts(self, authorization: str | None) -> bool:
        """Whether an Authorization header carries one of the keys."""
        scheme, _, token = (authorization or "").partition(" ")
        presented = _digest(token.strip())
        match = False
        for digest in self._digests:  # no early exit: every key costs the same
            match |= secrets.compare_digest(presented, digest)
        return match and scheme.lower() == "bearer"


def requires_key(path: str) -> bool:
    """vLLM's rule: the OpenAI routes (/v1/...) need a key; /health, /ping,
    /version, /metrics, /tokenize, /detokenize and the dev and profiler
    routes (only present when enabled) stay open."""
    return path == "/v1" or path.startswith("/v1/")
