"""Conversation memory: the SQLite session store, the durable inbox, context building, export.

Everything said is appended and kept; compaction only adds summaries that change what the
model is shown (``context``), and ``/new`` archives a session instead of deleting it.
"""
