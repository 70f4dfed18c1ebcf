"""The web frontends' own protocols over the one event log (CONTRACT §10): the AI SDK UI message stream and AG-UI.

Each protocol is a pure mapping from Sluice events to its frames (`ai_sdk.py`, `ag_ui.py`) plus the few routes it
needs (`routes_chat.py`, `routes_ag_ui.py`); `stream.py` serves any of them from the log with `id:` lines, so every
one resumes exactly with `Last-Event-ID`.
"""
