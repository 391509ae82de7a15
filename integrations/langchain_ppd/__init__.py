"""LangChain chat model over the PPD wire contract: ``ChatPPD``."""

from __future__ import annotations

from langchain_ppd.chat_models import ChatPPD

__all__ = ["ChatPPD"]
