"""Operations: metrics, health, the ops HTTP server, logging and role lifecycle.

Import the submodules directly (``from streamsync.ops import metrics``); this package keeps
no state of its own.
"""
