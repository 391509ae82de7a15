"""Where a client finds the PPD router and with which key: the rules every PPD client (the
sessions, ``langchain_ppd.ChatPPD``) shares, so they all read the same environment variables.

* base URL: the argument, else ``$PPD_BASE_URL``, else :data:`DEFAULT_BASE_URL`; a bare server
  root gets OpenAI's ``/v1``, a URL with a path is taken as the API base as it is;
* API key: the argument, else ``$PPD_API_KEY``, else ``$OPENAI_API_KEY``, else ``"none"`` (a
  router without ``--api-key`` ignores the key, and the openai client refuses an empty one).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

#: Where ``ppd-server`` listens by default.
DEFAULT_BASE_URL = "http://127.0.0.1:30000"


def resolve_base_url(base_url: str | None) -> str:
    """The OpenAI base URL (with ``/v1``) for a server root or an explicit API base."""
    url = (base_url or os.environ.get("PPD_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    return url if urlsplit(url).path else url + "/v1"


def resolve_api_key(api_key: str | None) -> str:
    """The key to send (see the module docstring)."""
    return api_key or os.environ.get("PPD_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none"
