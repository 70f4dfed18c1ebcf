"""Identity at the edge (CONTRACT §8): who is calling, and the tenant every task belongs to.

settings.py       AuthSettings: SLUICE_AUTH and friends, the refusal to run open on a public address
caller.py         Caller: the tenant and how it was proven
keyring.py        API key hashes from SLUICE_API_KEYS_FILE, re-read when the file changes
jwt_bearer.py     OIDC / JWT bearer tokens against a JWKS (PyJWT)
stream_tokens.py  signed, short-lived, per-task read tokens for EventSource
authenticator.py  credentials → Caller
guard.py          the ASGI middlewares: Host / Origin checks, authentication, access_token out of the query
deps.py           the tenant check every task route uses (`owned_task`), 404 for another tenant's task
"""

from stream_edge.auth.authenticator import Authenticator
from stream_edge.auth.caller import Caller
from stream_edge.auth.settings import AuthSettings

__all__ = ["AuthSettings", "Authenticator", "Caller"]
