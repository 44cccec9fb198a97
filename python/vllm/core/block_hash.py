"""Content keys of full KV-cache blocks (prefix caching).

A block's key is SHA-256 over a canonical encoding of what decides its
cached keys and values: the parent block's digest, the request's cache salt
(first block only: it then reaches every later block through the parent
chain) and the block's token ids. Python's built-in hash() is not used: for
tuples of ints it is deterministic and collisions can be constructed, which
would hand one request another's cached K/V (vLLM's CVE-2025-25183)."""
from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from typing import NamedTuple, Sequence

# The parent of a request's first block; versioned so a change of encoding
# can never match keys made by an older one.
_ROOT = hashlib.sha256(b"vllm prefix-cache block key v1").digest()


class BlockKey(NamedTuple):
    """Everything a block's digest covers. Kept beside a cached block and
    compared on lookup, so a hit needs equal content, not only an equal
    digest."""
    parent: bytes | None
    cache_salt: str | None
    token_ids: tuple[int, ...]


def _token_bytes(token_ids: Sequence[int]) -> bytes:
    words = array("q", token_ids)  # int64: every token id fits, none is cut
    if sys.byteorder != "little":
        words.byteswap()
    return words.tobytes()


def block_digest(key: BlockKey) -> bytes:
    salt = b"" if key.cache_salt is None else key.cache_salt.encode("utf-8")
    h = hashlib.sha256()
    h.update(_ROOT if key.parent is None else key.parent)
    # Lengths first: no two different (salt, tokens) pairs encode alike.
    h.update(struct.pack("<?QQ", key.cache_salt is not None, len(salt), len(key.token_ids)))
    h.update(salt)
    h.update(_token_bytes(key.token_ids))
    return h.digest()
