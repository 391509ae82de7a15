"""Prefix cache over KV pages: a radix tree whose edge symbols are whole pages of tokens.

Caching at page granularity (as SGLang does with page_size > 1) means a node owns exactly one
KV page and matching/eviction never splits a page. Contracts:

* ``match`` returns the pages holding the longest cached prefix (a multiple of page_size
  tokens) and the deepest matched node; the pages are only safe to use after ``lock(node)``.
* ``lock``/``unlock`` count references along the path to the root; a node with a zero count
  has no locked descendant and may be evicted (leaves first, least recently used first).
* ``insert`` adopts the caller's pages for the part of the sequence not cached yet, and
  returns the canonical pages for the whole inserted prefix plus the caller's pages that
  duplicated cached ones (the caller frees those).
* ``namespace`` (a request's ``cache_salt``): each namespace is a tree of its own under its own
  root, so a prefix cached under one salt is never matched under another (or under none):
  tenants that do not share a salt cannot observe each other's prompts by timing or by
  ``cached_tokens``. Eviction and flushing cover every namespace; an emptied namespace's root
  is dropped, so many short-lived salts do not accumulate.

Pure bookkeeping: integers and tuples only, no torch.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Node:
    key: tuple[int, ...]
    page: int
    parent: _Node | None
    children: dict[tuple[int, ...], _Node] = field(default_factory=dict)
    lock_ref: int = 0
    last_access: int = 0


class RadixCache:
    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self._clock = itertools.count(1)
        self._root = _Node(key=(), page=-1, parent=None, lock_ref=1)
        self._roots: dict[str | None, _Node] = {None: self._root}  # namespace -> its root
        self._num_nodes = 0
        self._num_locked = 0

    @property
    def num_pages(self) -> int:
        return self._num_nodes

    @property
    def num_evictable_pages(self) -> int:
        return self._num_nodes - self._num_locked

    def _page_keys(self, tokens: list[int], max_tokens: int | None = None):
        limit = len(tokens) if max_tokens is None else min(len(tokens), max_tokens)
        size = self.page_size
        for start in range(0, limit - limit % size, size):
            yield tuple(tokens[start : start + size])

    def _root_of(self, namespace: str | None) -> _Node:
        root = self._roots.get(namespace)
        if root is None:
            root = self._roots[namespace] = _Node(key=(), page=-1, parent=None, lock_ref=1)
        return root

    def match(
        self, tokens: list[int], max_tokens: int | None = None, namespace: str | None = None
    ) -> tuple[list[int], _Node]:
        """Longest cached prefix of ``tokens`` (at most ``max_tokens``) under ``namespace``:
        (pages, deepest node)."""
        pages: list[int] = []
        node = self._roots.get(namespace)
        if node is None:  # a namespace that caches nothing (yet)
            return pages, self._root
        now = next(self._clock)
        for key in self._page_keys(tokens, max_tokens):
            child = node.children.get(key)
            if child is None:
                break
            child.last_access = now
            pages.append(child.page)
            node = child
        return pages, node

    def lock(self, node: _Node) -> None:
        while node.parent is not None:
            if node.lock_ref == 0:
                self._num_locked += 1
            node.lock_ref += 1
            node = node.parent  # type: ignore[assignment]

    def unlock(self, node: _Node) -> None:
        while node.parent is not None:
            if node.lock_ref <= 0:
                raise RuntimeError("unlock of an unlocked radix node")
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self._num_locked -= 1
            node = node.parent  # type: ignore[assignment]

    def insert(
        self, tokens: list[int], pages: list[int], namespace: str | None = None
    ) -> tuple[list[int], list[int], _Node]:
        """Cache the full pages of ``tokens`` whose KV is in ``pages`` (pages[i] holds tokens
        [i*P, (i+1)*P)) under ``namespace``. Returns (canonical pages of the inserted prefix,
        caller pages now redundant, deepest node)."""
        node, canonical, redundant, now = self._root_of(namespace), [], [], next(self._clock)
        for index, key in enumerate(self._page_keys(tokens, len(pages) * self.page_size)):
            child = node.children.get(key)
            if child is None:
                child = _Node(key=key, page=pages[index], parent=node)
                node.children[key] = child
                self._num_nodes += 1
            elif child.page != pages[index]:
                redundant.append(pages[index])
            child.last_access = now
            canonical.append(child.page)
            node = child
        return canonical, redundant, node

    def evict(self, num_pages: int) -> list[int]:
        """Remove up to ``num_pages`` unlocked pages, least recently used leaves first."""
        heap = [(n.last_access, id(n), n) for n in self._iter_nodes() if not n.children and n.lock_ref == 0]
        heapq.heapify(heap)
        freed: list[int] = []
        while heap and len(freed) < num_pages:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.key]
            self._num_nodes -= 1
            freed.append(leaf.page)
            if parent.parent is not None and not parent.children and parent.lock_ref == 0:
                heapq.heappush(heap, (parent.last_access, id(parent), parent))
        self._drop_empty_namespaces()
        return freed

    def _drop_empty_namespaces(self) -> None:
        for namespace in [ns for ns, root in self._roots.items() if ns is not None and not root.children]:
            del self._roots[namespace]

    @property
    def num_namespaces(self) -> int:
        """Salted namespaces currently holding pages (the unsalted one is not counted)."""
        return sum(1 for ns, root in self._roots.items() if ns is not None and root.children)

    def reset(self) -> list[int]:
        """Drop everything (flush_cache). Refuses while any node is locked."""
        if self._num_locked:
            raise RuntimeError("cannot flush the prefix cache while requests use it")
        pages = [n.page for n in self._iter_nodes()]
        self._root.children.clear()
        self._roots = {None: self._root}
        self._num_nodes = 0
        return pages

    def _iter_nodes(self):
        stack = [child for root in self._roots.values() for child in root.children.values()]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())
