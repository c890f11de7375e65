"""Old import path of two helpers, kept only for mobilediff/exporter.py until it imports them from their homes:
``library_versions`` (mobilediff.bench.envelope) and ``tree_sha256`` (mobilediff.io)."""
from mobilediff.bench.envelope import library_versions  # noqa: F401
from mobilediff.io import tree_sha256  # noqa: F401
