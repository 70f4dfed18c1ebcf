"""The web frontends' own protocols over the one event log (CONTRACT §10): the AI SDK UI message stream and AG-UI.

Each protocol is a pure mapping from Sluice events to its frames (`ai_sdk.py`, `ag_ui.py`) plus the few routes it
needs (`routes_chat.py`, `routes_ag_ui.py`). Each is an encoding in the streaming engine, so its frames come from the
task's shared feed (`stream.py` opens them), with `id:` lines: every one resumes exactly with `Last-Event-ID`.
"""
