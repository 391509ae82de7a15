"""langchain-tests' standard integration suite for ChatPPD against the real embedded
cluster (``ppd_router``: ppd-server + 1P1D ppd-workers with SmolLM2-135M-Instruct).

Capabilities switched off, each with its reason:
* tool calling, tool choice, structured output, JSON mode: SmolLM2-135M cannot produce
  reliable tool calls or schema-following JSON (the router and ChatPPD pass ``tools`` /
  ``tool_choice`` / ``response_format`` through untouched; that plumbing is covered in
  tests/langchain/test_chat_ppd.py against a fake server that returns tool calls);
* image/PDF/audio/video inputs: the model is text-only;
* model override: a PPD cluster serves one model, any other name is a 404 by design;
* VCR tests (``test_stream_time``): they replay recorded cassettes of a hosted API; this
  suite runs live against a local cluster instead.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_ppd import ChatPPD

pytestmark = pytest.mark.e2e


class TestChatPPDStandardIntegration(ChatModelIntegrationTests):
    base_url: str = ""

    @pytest.fixture(autouse=True)
    def _use_router(self, ppd_router: str) -> None:
        type(self).base_url = ppd_router

    @property
    def chat_model_class(self) -> type[ChatPPD]:
        return ChatPPD

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # Short answers keep the CPU model quick; nothing in the suite needs long ones.
        return {"base_url": self.base_url, "max_tokens": 24}

    @property
    def has_tool_calling(self) -> bool:
        return False  # see the module docstring

    @property
    def has_tool_choice(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_model_override(self) -> bool:
        return False

    @property
    def supported_usage_metadata_details(self) -> dict[str, list[str]]:  # type: ignore[override]
        return {"invoke": ["cache_read_input"], "stream": ["cache_read_input"]}

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        """The second turn of one conversation: the server reports its prefix-cache hit."""
        llm = ChatPPD(**{**self.standard_chat_model_params, **self.chat_model_params})
        config = {"metadata": {"thread_id": f"cache-read-{uuid.uuid4().hex[:8]}"}}
        messages: list[Any] = [SystemMessage("You are a helpful assistant."), HumanMessage("Name three colors.")]
        first = llm.invoke(messages, config=config)
        messages += [first, HumanMessage("Name three more.")]
        if not stream:
            msg = llm.invoke(messages, config=config)
        else:
            chunks = list(llm.stream(messages, config=config))
            msg = chunks[0]
            for chunk in chunks[1:]:
                msg = msg + chunk  # type: ignore[assignment]
            assert isinstance(msg, AIMessageChunk)
        details = (msg.usage_metadata or {}).get("input_token_details") or {}
        assert details.get("cache_read", 0) > 0, msg.usage_metadata
        return msg  # type: ignore[return-value]
