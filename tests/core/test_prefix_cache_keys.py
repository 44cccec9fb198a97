"""Prefix-cache keys: SHA-256 over the content, never Python's hash(); a hit
needs equal tokens and an equal cache salt (vLLM's CVE-2025-25183)."""
from __future__ import annotations

import random
import sys

import pytest

from vllm.core.block_hash import BlockKey, block_digest
from vllm.core.block_pool import BlockPool
from vllm.core.kv_cache_manager import KVCacheManager
from vllm.core.request import Request
from vllm.sampling_params import SamplingParams

BS = 4
_M = 1 << 64
_P1, _P2, _P5 = 11400714785074694791, 14029467366897019727, 2870177450012600261


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) % _M


def _tuple_acc(lanes) -> int:
    """CPython's tuple hash (xxHash-based, 3.8+) before its length term."""
    acc = _P5
    for lane in lanes:
        acc = _rotl((acc + lane * _P2) % _M, 31) * _P1 % _M
    return acc


def colliding_blocks(rng: random.Random) -> tuple[list[int], list[int]]:
    """Two different blocks of BS token ids whose built-in tuple hashes are
    equal: the first id differs, the second is solved so the hash state
    after it matches again, the rest are shared. Each step of the tuple hash
    is invertible, so this takes a few tries, not a 2^64 search."""
    shared = [rng.randrange(1, 50_000) for _ in range(BS)]
    target = _tuple_acc(shared[:2])
    while True:
        first = rng.randrange(1, 50_000)
        before = _tuple_acc([first])
        # undo the multiply and the rotation of the second step
        mixed = _rotl(target * pow(_P1, -1, _M) % _M, 64 - 31)
        second = (mixed - before) * pow(_P2, -1, _M) % _M
        if second < (1 << 61) - 1 and first != shared[0]:  # hash(int) is the int itself
            return shared, [first, second] + shared[2:]


def request(rid: str, tokens: list[int], salt: str | None = None) -> Request:
    return Request(rid, tokens, SamplingParams(temperature=0, max_tokens=4), eos_token_id=None,
                   cache_salt=salt)


def cached_prefix(manager: KVCacheManager, req: Request) -> int:
    """Tokens of req served from the cache."""
    return manager.get_computed_blocks(req)[1]


def fill(manager: KVCacheManager, req: Request) -> None:
    assert manager.allocate_slots(req, req.num_tokens)


@pytest.mark.skipif(sys.hash_info.width != 64, reason="the construction is for 64-bit hashes")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blocks_whose_builtin_hashes_collide_do_not_share(seed):
    a, b = colliding_blocks(random.Random(seed))
    assert a != b and hash(tuple(a)) == hash(tuple(b))
    assert hash((None, tuple(a))) == hash((None, tuple(b)))  # the old key collides
    manager = KVCacheManager(BlockPool(16, enable_caching=True), BS)
    fill(manager, request("a", a + [7]))
    assert cached_prefix(manager, request("same", a + [9])) == BS  # control: equal tokens hit
    assert cached_prefix(manager, request("b", b + [7])) == 0


def test_a_hit_needs_equal_content_not_only_an_equal_digest():
    # Forge the worst case: a digest stored for one content, asked for with
    # another (as a SHA-256 collision would). The stored key decides.
    pool = BlockPool(2, enable_caching=True)
    (block,) = pool.take(1)
    key = BlockKey(None, None, (1, 2, 3, 4))
    pool.mark_cached(block, block_digest(key), key)
    assert pool.lookup(block_digest(key), key) is block
    assert pool.lookup(block_digest(key), key._replace(token_ids=(1, 2, 3, 5))) is None
    assert pool.lookup(block_digest(key), key._replace(cache_salt="x")) is None


def test_cache_salt_separates_tenants_and_equal_salts_share():
    rng = random.Random(3)
    prompt = [rng.randrange(1, 1000) for _ in range(3 * BS + 1)]
    manager = KVCacheManager(BlockPool(32, enable_caching=True), BS)
    fill(manager, request("alice", prompt, salt="alice"))
    assert cached_prefix(manager, request("alice-2", prompt, salt="alice")) == 3 * BS
    assert cached_prefix(manager, request("bob", prompt, salt="bob")) == 0
    assert cached_prefix(manager, request("nosalt", prompt)) == 0
    fill(manager, request("plain", prompt))
    assert cached_prefix(manager, request("plain-2", prompt)) == 3 * BS
    assert cached_prefix(manager, request("eve", prompt, salt="")) == 0  # "" is not None


def test_digest_covers_parent_salt_and_every_token():
    base = BlockKey(None, "s", (5, 6, 7, 8))
    variants = [base._replace(parent=block_digest(base)), base._replace(cache_salt=None),
                base._replace(cache_salt="t"), base._replace(token_ids=(5, 6, 7, 9)),
                base._replace(token_ids=(5, 6, 7)), base._replace(token_ids=(5, 6, 7, 8, 0))]
    digests = {block_digest(k) for k in [base] + variants}
    assert len(digests) == 1 + len(variants)
    assert all(len(d) == 32 for d in digests)
    assert block_digest(base) == block_digest(BlockKey(None, "s", (5, 6, 7, 8)))
