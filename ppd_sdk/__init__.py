"""PPD client SDK: multi-turn chat sessions that carry a conversation id, the turn number
and SLO hints to a PPD router (or any OpenAI-compatible server), keep the history, stream,
and trace every turn with the server's routing decision. :mod:`ppd_sdk.wire` is the wire
contract the router shares; :mod:`ppd_sdk.endpoint` finds the router::

    from ppd_sdk import ChatSession

    with ChatSession(base_url="http://127.0.0.1:30000", preset="interactive") as chat:
        for question in ("Hi!", "What is 2+2?"):
            reply = chat.send(question)
            print(reply.text, reply.route and reply.route.route, reply.usage.cached_tokens)
"""

from __future__ import annotations

from ._async_session import AsyncChatSession, AsyncReplyStream
from ._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    PPDError,
    RateLimitError,
    UnprocessableEntityError,
)
from ._ids import new_conversation_id
from ._session import ChatSession, ReplyStream
from ._types import Message, Reply, ToolCall, Usage
from ._version import __version__
from .endpoint import resolve_api_key, resolve_base_url
from .wire import PRESETS, SLO, Hints, Predicted, RouteInfo, Weights, WireError

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncChatSession",
    "AsyncReplyStream",
    "AuthenticationError",
    "BadRequestError",
    "ChatSession",
    "ConflictError",
    "Hints",
    "InternalServerError",
    "Message",
    "NotFoundError",
    "PPDError",
    "PRESETS",
    "PermissionDeniedError",
    "Predicted",
    "RateLimitError",
    "Reply",
    "ReplyStream",
    "RouteInfo",
    "SLO",
    "ToolCall",
    "UnprocessableEntityError",
    "Usage",
    "Weights",
    "WireError",
    "__version__",
    "new_conversation_id",
    "resolve_api_key",
    "resolve_base_url",
]
