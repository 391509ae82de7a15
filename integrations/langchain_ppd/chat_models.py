"""``ChatPPD``: a LangChain chat model over the PPD wire contract.

It subclasses langchain-openai's ``BaseChatOpenAI`` (as ChatDeepSeek and ChatXAI do), which
brings tool calling, structured output, streaming with usage and error mapping; this class
adds what PPD needs on every request:

* the conversation id (``X-PPD-Conversation-Id`` + ``prompt_cache_key``), resolved per call
  as: ``conversation_id=`` kwarg -> the model's ``conversation_id`` field -> the run's metadata
  ``thread_id`` / ``session_id`` / ``conversation_id`` (LangGraph copies
  ``configurable.thread_id`` into the metadata);
* SLO hints (``slo``, ``weights``, ``preset``) from the constructor or per call;
* the W3C ``traceparent`` of the caller's current span, so the router's span joins the trace;
* the server's routing decision in ``response_metadata["ppd"]`` (on the final chunk when
  streaming; ``stream_usage`` is on by default).
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator, Mapping

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.language_models import LanguageModelInput
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_openai.chat_models.base import BaseChatOpenAI
from opentelemetry import propagate
from pydantic import Field, model_validator

# The SDK's public rules: the same environment variables, the same wire contract.
from ppd_sdk import resolve_api_key, resolve_base_url
from ppd_sdk.wire import BODY_FIELD, NO_SLO, PRESETS, SLO, Hints, Weights, resolve_slo, resolve_weights

#: Run-metadata keys that name a conversation, in the order they are tried.
THREAD_KEYS = ("thread_id", "session_id", "conversation_id")
_HINT_KWARGS = ("conversation_id", "parent_conversation_id", "turn", "slo", "weights", "preset")


class ChatPPD(BaseChatOpenAI):
    """LangChain chat model for a PPD router (or any OpenAI-compatible server).

    ::

        from langchain_ppd import ChatPPD

        llm = ChatPPD(base_url="http://127.0.0.1:30000", preset="interactive", temperature=0)
        llm.invoke("Hello", config={"metadata": {"thread_id": "t-1"}})
        msg = llm.invoke("And now?", conversation_id="t-1", slo={"ttft_ms": 300})
        print(msg.response_metadata["ppd"]["route"])   # "local" | "pd" | "replica"

    ``model`` defaults to the first model the server lists; ``base_url`` to
    ``$PPD_BASE_URL`` or http://127.0.0.1:30000 (``/v1`` is added to a bare server root);
    ``api_key`` to ``$PPD_API_KEY`` (a router without ``--api-key`` ignores it).
    """

    model_name: str = Field(default="", alias="model")
    conversation_id: str | None = None
    """Fixed conversation id for every call (else taken from the run's metadata)."""
    parent_conversation_id: str | None = None
    """Mark the conversation as a fork of this one (sent with every call that has it)."""
    slo: SLO | None = None
    """Absolute latency targets (``SLO(ttft_ms=..., tpot_ms=...)``)."""
    weights: Weights | None = None
    """Relative TTFT/TPOT weights for the router's cost rule."""
    preset: str | None = None
    """``interactive`` | ``balanced`` | ``throughput`` (used when ``weights`` is not given)."""

    @model_validator(mode="before")
    @classmethod
    def _ppd_defaults(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = dict(values)
        if not any(values.get(k) for k in ("base_url", "openai_api_base")):
            values["base_url"] = resolve_base_url(None)
        else:
            key = "base_url" if values.get("base_url") else "openai_api_base"
            values[key] = resolve_base_url(values[key])
        if not any(values.get(k) for k in ("api_key", "openai_api_key")):
            values["api_key"] = resolve_api_key(None)
        # A PPD router always reports usage on the final chunk; langchain-openai turns
        # stream_usage off for custom base URLs, so turn it back on.
        values.setdefault("stream_usage", True)
        resolve_weights(values.get("weights"), values.get("preset"))  # fail fast on a bad preset
        return values

    @property
    def _llm_type(self) -> str:
        return "ppd-chat"

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"openai_api_key": "PPD_API_KEY"}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "ppd"
        return params

    # -- hints -------------------------------------------------------------------------------
    def _with_hints(self, kwargs: dict[str, Any], metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        """``kwargs`` with the PPD hint kwargs folded into ``extra_headers`` / ``extra_body``."""
        given = {k: kwargs.pop(k) for k in _HINT_KWARGS if k in kwargs}
        conversation_id = given.get("conversation_id") or self.conversation_id
        if conversation_id is None and metadata:
            conversation_id = next((str(metadata[k]) for k in THREAD_KEYS if metadata.get(k)), None)
        hints = Hints(
            conversation_id=conversation_id,
            parent_conversation_id=given.get("parent_conversation_id") or self.parent_conversation_id,
            turn=given.get("turn"),
            weights=resolve_weights(given.get("weights"), given.get("preset"))
            or resolve_weights(self.weights, self.preset)
            or PRESETS["balanced"],
            slo=resolve_slo(given.get("slo")) or self.slo or NO_SLO,
        )
        headers, body = hints.apply(kwargs.get("extra_headers"), {**(self.extra_body or {}), **(kwargs.get("extra_body") or {})})
        propagate.inject(headers)
        kwargs["extra_headers"] = headers
        kwargs["extra_body"] = body
        if not (kwargs.get("model") or self.model_name):
            kwargs["model"] = self._discover_model()
        return kwargs

    def _discover_model(self) -> str:
        if not self.model_name:
            models = self.root_client.models.list()
            if not models.data:
                raise ValueError("the server lists no model; pass model=...")
            self.model_name = models.data[0].id
        return self.model_name

    async def _adiscover_model(self) -> None:
        if not self.model_name:
            models = await self.root_async_client.models.list()
            if not models.data:
                raise ValueError("the server lists no model; pass model=...")
            self.model_name = models.data[0].id

    @staticmethod
    def _metadata(run_manager: Any) -> Mapping[str, Any] | None:
        return getattr(run_manager, "metadata", None) if run_manager is not None else None

    # -- calls -------------------------------------------------------------------------------
    # langchain-core passes the run manager (and so the run's metadata) to _generate but not
    # to _stream/_astream (also used by invoke() when streaming): the public entry points read
    # the thread id from the config instead; _generate still reads the run manager (generate()).
    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None, **kwargs: Any
    ) -> AIMessage:
        self._conversation_from_config(config, kwargs)
        return super().invoke(input, config, stop=stop, **kwargs)

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None, **kwargs: Any
    ) -> AIMessage:
        self._conversation_from_config(config, kwargs)
        return await super().ainvoke(input, config, stop=stop, **kwargs)

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None, **kwargs: Any
    ) -> Iterator[AIMessageChunk]:
        self._conversation_from_config(config, kwargs)
        yield from super().stream(input, config, stop=stop, **kwargs)

    async def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        self._conversation_from_config(config, kwargs)
        async for chunk in super().astream(input, config, stop=stop, **kwargs):
            yield chunk

    def _conversation_from_config(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> None:
        if kwargs.get("conversation_id") or self.conversation_id:
            return
        metadata = {**(self.metadata or {}), **(ensure_config(config).get("metadata") or {})}
        found = next((str(metadata[k]) for k in THREAD_KEYS if metadata.get(k)), None)
        if found is not None:
            kwargs["conversation_id"] = found

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        kwargs = self._with_hints(kwargs, self._metadata(run_manager))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await self._adiscover_model()
        kwargs = self._with_hints(kwargs, self._metadata(run_manager))
        return await super()._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        kwargs = self._with_hints(kwargs, self._metadata(run_manager))
        yield from super()._stream(messages, stop=stop, run_manager=run_manager, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        await self._adiscover_model()
        kwargs = self._with_hints(kwargs, self._metadata(run_manager))
        async for chunk in super()._astream(messages, stop=stop, run_manager=run_manager, **kwargs):
            yield chunk

    # -- the routing decision into response_metadata ------------------------------------------
    def _create_chat_result(self, response: Any, generation_info: dict[str, Any] | None = None) -> ChatResult:
        result = super()._create_chat_result(response, generation_info)
        ppd = _ppd_field(response)
        if ppd is not None:
            for generation in result.generations:
                if isinstance(generation.message, AIMessage):
                    generation.message.response_metadata[BODY_FIELD] = ppd
            if result.llm_output is not None:
                result.llm_output[BODY_FIELD] = ppd
        return result

    def _convert_chunk_to_generation_chunk(
        self, chunk: dict[str, Any], default_chunk_class: type, base_generation_info: dict[str, Any] | None
    ) -> ChatGenerationChunk | None:
        generation_chunk = super()._convert_chunk_to_generation_chunk(chunk, default_chunk_class, base_generation_info)
        ppd = chunk.get(BODY_FIELD)
        if generation_chunk is not None and isinstance(ppd, dict) and isinstance(generation_chunk.message, AIMessageChunk):
            generation_chunk.message.response_metadata[BODY_FIELD] = ppd
        return generation_chunk


def _ppd_field(response: Any) -> dict[str, Any] | None:
    if isinstance(response, dict):
        value = response.get(BODY_FIELD)
    else:
        value = (getattr(response, "model_extra", None) or {}).get(BODY_FIELD)
    return value if isinstance(value, dict) else None
