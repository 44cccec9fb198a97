"""Which blocks each request owns, and prefix-cache lookups.

A full block is identified by a SHA-256 digest of (parent block's digest,
the request's cache salt, its token ids) (core/block_hash.py): equal keys
mean the same tokens at the same positions after the same prefix and salt,
so the cached K/V are valid for any request that shares them."""
from __future__ import annotations

from vllm.core.block_hash import BlockKey, block_digest
from vllm.core.block_pool import BlockPool, KVCacheBlock
from vllm.core.request import Request


class KVCacheManager:
    def __init__(self, pool: BlockPool, block_size: int) -> None:
        self.pool = pool
        self.block_size = block_size
        self.req_blocks: dict[str, list[KVCacheBlock]] = {}
        self.req_num_cached: dict[str, int] = {}  # leading blocks already marked cached

    def _block_key(self, request: Request, index: int) -> BlockKey:
        """The key of the request's index-th block (which must be full)."""
        bs = self.block_size
        if index == 0:
            return BlockKey(None, request.cache_salt, tuple(request.all_token_ids[:bs]))
        return BlockKey(request.block_hashes[index - 1], None,
                        tuple(request.all_token_ids[index * bs:(index + 1) * bs]))

    def _extend_hashes(self, request: Request, num_tokens: int) -> None:
        """Digest every full block among the request's first num_tokens tokens."""
        hashes = request.block_hashes
        while (len(hashes) + 1) * self.block_size <= num_tokens:
            hashes.append(block_digest(self._block_key(request, len(hashes))))

    def get_computed_blocks(self, request: Request) -> tuple[list[KVCacheBlock], int]:
        """The longest run of cached blocks that starts the request's tokens.
        At least one token is always left to compute (its logits are needed),
        and requests that want prompt logprobs compute everything."""
        if not self.pool.enable_caching or request.sampling_params.prompt_logprobs is not None:
            return [], 0
        self._extend_hashes(request, request.num_tokens)
        max_blocks = (request.num_tokens - 1) // self.block_size
        hits: list[KVCacheBlock] = []
        for i, block_hash in enumerate(request.block_hashes[:max_blocks]):
            block = self.pool.lookup(block_hash, self._block_key(request, i))
            if block is None:
                break
            hits.append(block)
        self.pool.queries += request.num_tokens
        self.pool.hits += len(hits) * self.block_size
        return hits, len(hits) * self.block_size

    def allocate_slots(self, request: Request, num_new_tokens: int,
                       new_computed_blocks: list[KVCacheBlock] | None = None) -> bool:
        """Blocks for num_new_tokens more tokens (after any prefix hits).
        False, changing nothing, when the pool cannot provide them."""
        new_computed_blocks = new_computed_blocks or []
        blocks = self.req_blocks.setdefault(request.request_id, [])
        bs = self.block_size
        num_computed = request.num_computed_tokens + len(new_computed_blocks) * bs
        total = num_computed + num_new_tokens
        needed = -(-total // bs) - len(blocks) - len(new_computed_blocks)
        # Cached hits sitting on the free list stop being free once taken.
        reclaimed = sum(1 for b in new_computed_blocks if b.ref_cnt == 0)
        if needed > self.pool.num_free_blocks - reclaimed:
            if not blocks:
                del self.req_blocks[request.request_id]
            return False
        self.pool.touch(new_computed_blocks)
        blocks.extend(new_computed_blocks)
        if needed > 0:
            blocks.extend(self.pool.take(needed))
        if self.pool.enable_caching:
            # Blocks this step fills completely become findable now: within a
            # step every layer writes all new K/V before any attention reads.
            known = min(total, request.num_tokens)
            self._extend_hashes(request, known)
            first = self.req_num_cached.get(request.request_id, 0)
            for i in range(first, known // bs):
                self.pool.mark_cached(blocks[i], request.block_hashes[i],
                                      self._block_key(request, i))
            self.req_num_cached[request.request_id] = max(first, known // bs)
        return True

    def block_ids(self, request_id: str) -> list[int]:
        return [b.block_id for b in self.req_blocks.get(request_id, [])]

    def free(self, request: Request) -> None:
        blocks = self.req_blocks.pop(request.request_id, [])
        self.req_num_cached.pop(request.request_id, None)
        self.pool.release(list(reversed(blocks)))

    def hit_rate(self) -> float:
        return self.pool.hits / self.pool.queries if self.pool.queries else 0.0
