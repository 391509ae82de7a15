"""langchain-tests' standard unit suite for ChatPPD (no network)."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_ppd import ChatPPD


class TestChatPPDStandardUnit(ChatModelUnitTests):
    """``test_serdes`` skips itself: ChatPPD keeps BaseChatOpenAI's ``is_lc_serializable() ->
    False`` (a serialized model would carry a router URL and hints that belong to the
    deployment, not to the chain), so there is nothing to round-trip."""

    @property
    def chat_model_class(self) -> type[ChatPPD]:
        return ChatPPD

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "smollm2", "base_url": "http://127.0.0.1:30000"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"PPD_BASE_URL": "http://127.0.0.2:31000", "PPD_API_KEY": "secret-from-env"},
            {"model": "smollm2"},
            {"openai_api_base": "http://127.0.0.2:31000/v1", "openai_api_key": "secret-from-env"},
        )
