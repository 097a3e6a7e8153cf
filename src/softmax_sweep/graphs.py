"""Built MXNet graphs kept for reuse by threads that train side by side.

MXNet's CachedOp is not thread-safe: two threads making their first call of one graph together
crashed exercise 2's study ("Graph attr dependency shape is required by pass MXPlanMemory", or a
segfault; tests/test_graphs.py), and a graph built with static_alloc returns its outputs in its
own memory, which its next call overwrites. So a thread takes a graph for as long as it uses what
the graph returns, and a thread that finds every copy taken builds one more."""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any


class Graphs:
    """Graphs by the arguments that build them (build(*key)), each in one thread's hands at a time;
    the `most` keys used last are kept."""

    def __init__(self, build: Callable[..., Any], most: int = 128) -> None:
        self._build, self._most = build, most
        self._free: OrderedDict[tuple[Hashable, ...], list[Any]] = OrderedDict()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def taken(self, *key: Hashable) -> Iterator[Any]:
        with self._lock:
            copies = self._free.get(key)
            graph = copies.pop() if copies else None
        if graph is None:
            graph = self._build(*key)
        try:
            yield graph
        finally:
            with self._lock:
                self._free.setdefault(key, []).append(graph)
                self._free.move_to_end(key)
                while len(self._free) > self._most:
                    self._free.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
