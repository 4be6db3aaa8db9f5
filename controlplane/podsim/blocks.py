"""The KV-cache block pool with prefix caching, as vLLM keeps it (pure).

The pool holds ``num_blocks`` blocks of ``block_size`` tokens. A block is in use
(held by one or more running requests), cached (free but still holding the KV of a
full prompt block, kept in LRU order and evicted when space is needed) or empty.
Full prompt blocks are named by a chained hash of their tokens, so two prompts share a
block only when everything before it is equal too; a new request's leading blocks that
are in use or cached are prefix-cache hits: shared, not computed again.

Helpers here turn a prompt into block hashes: from its text (one pseudo-token per word
or punctuation mark), or from a named shared prefix for load generators that send
token counts instead of text.
"""

from __future__ import annotations

import re
import zlib
from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["BlockPool", "prefix_block_hashes", "text_block_hashes", "text_tokens"]

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_UNIQUE = 0x5EED  # tags blocks that belong to one request only


def text_tokens(text: str) -> list[int]:
    """Pseudo-token ids of ``text``: one per word or punctuation mark."""
    return [zlib.crc32(t.encode()) for t in _TOKEN_RE.findall(text)]


def _chain(token_blocks: Sequence[Sequence[int]], parent: int = 0) -> tuple[int, ...]:
    out = []
    for block in token_blocks:
        parent = hash((parent, *block))
        out.append(parent)
    return tuple(out)


def text_block_hashes(tokens: Sequence[int], block_size: int) -> tuple[int, ...]:
    """Chained hashes of the full blocks of ``tokens``."""
    full = len(tokens) // block_size
    return _chain([tokens[i * block_size : (i + 1) * block_size] for i in range(full)])


def prefix_block_hashes(
    prefix: str | None, prefix_tokens: int, prompt_tokens: int, block_size: int, unique: int
) -> tuple[int, ...]:
    """Block hashes of a prompt whose first ``prefix_tokens`` are the shared ``prefix``.

    The rest of the prompt is this request's own (``unique`` tells requests apart), so
    it occupies the cache without ever being hit by another request.
    """
    shared = min(prefix_tokens, prompt_tokens) // block_size if prefix else 0
    key = zlib.crc32(prefix.encode()) if prefix else 0
    head = _chain([(key, i) for i in range(shared)])
    tail = _chain(
        [(_UNIQUE, unique, i) for i in range(shared, prompt_tokens // block_size)],
        head[-1] if head else 0,
    )
    return head + tail


class BlockPool:
    """Block accounting: in-use blocks (hashed or not), the LRU of cached blocks."""

    def __init__(self, num_blocks: int, *, caching: bool = True) -> None:
        if num_blocks < 1:
            raise ValueError("num_blocks must be >= 1")
        self.num_blocks = num_blocks
        self.caching = caching
        self._refs: dict[int, int] = {}  # hashed blocks in use -> holders
        self._cached: OrderedDict[int, None] = OrderedDict()  # free, hashed, LRU first
        self._anon = 0  # in-use blocks without a hash (partial blocks, generated tokens)

    @property
    def in_use(self) -> int:
        return len(self._refs) + self._anon

    @property
    def free(self) -> int:
        """Blocks that can be handed out (empty ones plus evictable cached ones)."""
        return self.num_blocks - self.in_use

    @property
    def usage(self) -> float:
        return self.in_use / self.num_blocks

    def cached_blocks(self) -> int:
        return len(self._cached)

    def lookup(self, hashes: Sequence[int], limit: int) -> int:
        """How many leading ``hashes`` (at most ``limit``) are in use or cached."""
        if not self.caching:
            return 0
        n = 0
        for h in hashes[:limit]:
            if h not in self._refs and h not in self._cached:
                break
            n += 1
        return n

    def can_take(self, hits: Sequence[int], new_blocks: int) -> bool:
        """Whether ``hits`` (found by ``lookup``) and ``new_blocks`` more fit now."""
        revived = sum(1 for h in hits if h not in self._refs)
        return new_blocks <= self.free - revived

    def take(self, hits: Sequence[int], new_blocks: int) -> None:
        """Hold the hit blocks and ``new_blocks`` unhashed ones (check ``can_take``)."""
        for h in hits:
            if h in self._refs:
                self._refs[h] += 1
            else:
                del self._cached[h]
                self._refs[h] = 1
        self._alloc(new_blocks)

    def grow(self, new_blocks: int) -> bool:
        """Hold ``new_blocks`` more unhashed blocks, if they fit."""
        if new_blocks > self.free:
            return False
        self._alloc(new_blocks)
        return True

    def _alloc(self, n: int) -> None:
        if n > self.free:
            raise RuntimeError("KV block pool overcommitted")
        overflow = self.in_use + len(self._cached) + n - self.num_blocks
        for _ in range(max(0, overflow)):
            self._cached.popitem(last=False)
        self._anon += n

    def seal(self, h: int) -> None:
        """A held unhashed block is now a full prompt block named ``h``."""
        self._anon -= 1
        if h in self._refs:  # computed twice at once: keep one copy
            self._refs[h] += 1
        elif h in self._cached:
            del self._cached[h]
            self._refs[h] = 1
        else:
            self._refs[h] = 1

    def release(self, hashes: Sequence[int], anon: int, *, cache: bool = True) -> None:
        """Drop a request's blocks; its hashed ones stay cached (most recent last)."""
        self._anon -= anon
        for h in reversed(hashes):  # the tail of a prompt is evicted before its head
            left = self._refs[h] - 1
            if left:
                self._refs[h] = left
            else:
                del self._refs[h]
                if cache:
                    self._cached[h] = None

    def clear_cache(self) -> None:
        self._cached.clear()
