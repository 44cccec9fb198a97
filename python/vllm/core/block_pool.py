"""The pool of KV-cache blocks: reference counts, the free list in eviction
order, and the map from content hash to cached block (prefix caching).

A free block keeps its hash and contents until it is reused, so a later
request with the same prefix can take it back (a hit). Free blocks are
reused least-recently-freed first."""
from __future__ import annotations

from collections import OrderedDict

from vllm.core.block_hash import BlockKey


class KVCacheBlock:
    __slots__ = ("block_id", "ref_cnt", "block_hash", "block_key")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash: bytes | None = None
        self.block_key: BlockKey | None = None  # what block_hash is the digest of

    def __repr__(self) -> str:
        digest = self.block_hash.hex()[:12] if self.block_hash else None
        return f"KVCacheBlock({self.block_id}, ref={self.ref_cnt}, hash={digest})"


class BlockPool:
    def __init__(self, num_blocks: int, enable_caching: bool) -> None:
        if num_blocks < 1:
            raise ValueError("the KV cache needs at least one block")
        self.blocks = [KVCacheBlock(i) for i in range(num_blocks)]
        self.enable_caching = enable_caching
        # block_id -> block, oldest-freed first: the next to be evicted.
        self.free: OrderedDict[int, KVCacheBlock] = OrderedDict(
            (b.block_id, b) for b in self.blocks)
        self.cached: dict[bytes, KVCacheBlock] = {}
        self.hits = 0  # tokens served from the prefix cache
        self.queries = 0  # prompt tokens looked up

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    def usage(self) -> float:
        return 1.0 - self.num_free_blocks / self.num_blocks

    def take(self, count: int) -> list[KVCacheBlock]:
        """Fresh blocks for new tokens; evicts the oldest free cached blocks."""
        if count > len(self.free):
            raise RuntimeError(f"asked for {count} blocks, {len(self.free)} free")
        taken = []
        for _ in range(count):
            _, block = self.free.popitem(last=False)
            if block.block_hash is not None:
                if self.cached.get(block.block_hash) is block:
                    del self.cached[block.block_hash]
                block.block_hash = block.block_key = None
            block.ref_cnt = 1
            taken.append(block)
        return taken

    def lookup(self, block_hash: bytes, key: BlockKey) -> KVCacheBlock | None:
        """The cached block with this digest, only if its content key is
        equal too: a hit is never served for different tokens or salt."""
        if not self.enable_caching:
            return None
        block = self.cached.get(block_hash)
        return block if block is not None and block.block_key == key else None

    def touch(self, blocks: list[KVCacheBlock]) -> None:
        """Share cached blocks with one more request."""
        for block in blocks:
            if block.ref_cnt == 0:
                del self.free[block.block_id]
            block.ref_cnt += 1

    def release(self, blocks: list[KVCacheBlock]) -> None:
        """Drop one reference from each block. Pass a request's blocks in
        reverse order, so its tail blocks (the least shareable) are evicted
        before its head."""
        for block in blocks:
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                self.free[block.block_id] = block

    def mark_cached(self, block: KVCacheBlock, block_hash: bytes, key: BlockKey) -> None:
        """A full block's content is now known: make it findable by hash."""
        if not self.enable_caching or block.block_hash is not None:
            return
        block.block_hash = block_hash
        block.block_key = key
        self.cached.setdefault(block_hash, block)

    def reset_prefix_cache(self) -> bool:
        """Forget every cached hash; refused while blocks are in use."""
        if self.num_free_blocks != self.num_blocks:
            return False
        for block in self.blocks:
            block.block_hash = block.block_key = None
        self.cached.clear()
        self.hits = self.queries = 0
        return True
