"""Node provenance without the quadratic copy, for the exporters' graph passes.

torch.fx records where every node came from (``node.meta["from_node"]``: a chain of ``NodeSource`` records, one per
pass). Each time a pass re-creates a node, ``NodeSource.__init__`` deep-copies the node's whole chain, so a graph
that goes through P passes pays O(P^2) record copies per node. ExecuTorch's XNNPACK lowering runs some forty passes:
on the tiny test UNet the copies were about 40 % of the lowering time.

:func:`shared_provenance` keeps the chain but shares its records instead of copying them (a new list holding the
same records). Nothing reads the chain to build a program; it is debugging information whose records are never
changed after creation, so sharing them changes no output: the lowered ExecuTorch program is byte-identical
(tests/test_provenance.py).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

_lock = threading.Lock()
_depth = 0
_original = None


def _init_sharing(self, node=None, pass_name: str = "", action=None) -> None:
    chain = node.meta.get("from_node") if node is not None and node.meta is not None else None
    if chain is None:
        _original(self, node, pass_name, action)
        return
    node.meta["from_node"] = []  # the original copies this (now empty) list
    try:
        _original(self, node, pass_name, action)
    finally:
        node.meta["from_node"] = chain
    self.from_node = list(chain)


@contextmanager
def shared_provenance() -> Iterator[None]:
    """Within the block, fx provenance records are shared, not deep-copied (re-entrant; restored on exit)."""
    global _depth, _original
    from torch.fx.traceback import NodeSource

    with _lock:
        if _depth == 0:
            _original = NodeSource.__init__
            NodeSource.__init__ = _init_sharing
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                NodeSource.__init__ = _original
                _original = None
