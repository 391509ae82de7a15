"""ChatPPD's PPD plumbing against the in-process fake server: conversation id resolution,
SLO hints, routing info in response_metadata, streaming usage, tools, structured output."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from fake_openai import FakeOpenAI
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from pydantic import BaseModel

from langchain_ppd import ChatPPD
from ppd_sdk import SLO


def make(fake: FakeOpenAI, **kwargs: Any) -> ChatPPD:
    return ChatPPD(
        base_url="http://fake.test:8080/v1",
        api_key="k",
        http_client=httpx2.Client(transport=httpx2.MockTransport(fake.handle)),
        http_async_client=httpx2.AsyncClient(transport=httpx2.MockTransport(fake.handle)),
        **kwargs,
    )


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


def test_conversation_id_resolution_order(fake: FakeOpenAI) -> None:
    llm = make(fake, model="m")
    llm.invoke("hi")
    assert "x-ppd-conversation-id" not in fake.requests[-1].headers and "prompt_cache_key" not in fake.bodies[-1]
    for key in ("thread_id", "session_id", "conversation_id"):
        llm.invoke("hi", config={"metadata": {key: f"from-{key}"}})
        assert fake.requests[-1].headers["x-ppd-conversation-id"] == f"from-{key}"
        assert fake.bodies[-1]["prompt_cache_key"] == f"from-{key}"
    fixed = make(fake, model="m", conversation_id="field")
    fixed.invoke("hi", config={"metadata": {"thread_id": "meta"}})
    assert fake.requests[-1].headers["x-ppd-conversation-id"] == "field"
    fixed.invoke("hi", conversation_id="kwarg", config={"metadata": {"thread_id": "meta"}})
    assert fake.requests[-1].headers["x-ppd-conversation-id"] == "kwarg"


def test_slo_hints_from_constructor_and_per_call(fake: FakeOpenAI) -> None:
    llm = make(fake, model="m", preset="interactive", slo=SLO(ttft_ms=250))
    llm.invoke("hi")
    assert fake.requests[-1].headers["x-slo-ttft-ms"] == "250"
    assert fake.bodies[-1]["ppd"]["weights"] == {"ttft": 2.0, "tpot": 1.0}
    llm.invoke("hi", slo={"tpot_ms": 30}, preset="throughput", parent_conversation_id="root")
    headers, body = fake.requests[-1].headers, fake.bodies[-1]
    assert headers["x-slo-tpot-ms"] == "30" and "x-slo-ttft-ms" not in headers
    assert headers["x-ppd-parent-conversation-id"] == "root"
    assert body["ppd"]["weights"] == {"ttft": 1.0, "tpot": 2.0}
    with pytest.raises(ValueError, match="preset"):
        make(fake, model="m", preset="nope")


def test_invoke_has_routing_info_and_cached_tokens(fake: FakeOpenAI) -> None:
    llm = make(fake, model="m", temperature=0)
    config = {"metadata": {"thread_id": "t"}}
    first = llm.invoke("one", config=config)
    msg = llm.invoke([HumanMessage("one"), first, HumanMessage("two")], config=config)
    assert msg.response_metadata["ppd"]["route"] == "local"
    assert msg.response_metadata["model_name"] == "m"
    assert msg.usage_metadata is not None and msg.usage_metadata["input_token_details"]["cache_read"] > 0


def test_stream_has_usage_and_routing_on_the_last_chunk(fake: FakeOpenAI) -> None:
    llm = make(fake, model="m")
    chunks = list(llm.stream("hi", config={"metadata": {"thread_id": "t"}}))
    assert fake.bodies[-1]["stream_options"] == {"include_usage": True}
    assert fake.requests[-1].headers["x-ppd-conversation-id"] == "t"
    full: AIMessageChunk = sum(chunks[1:], chunks[0])  # type: ignore[assignment]
    assert full.content == "answer 1"
    assert full.usage_metadata is not None and full.usage_metadata["output_tokens"] == 2
    assert full.response_metadata["ppd"]["route"] == "pd"
    assert chunks[-1].chunk_position == "last"


async def test_async_invoke_and_stream(fake: FakeOpenAI) -> None:
    llm = make(fake)  # no model: discovered from /v1/models
    msg = await llm.ainvoke("hi", config={"metadata": {"thread_id": "a"}})
    assert msg.content == "answer 1" and fake.bodies[-1]["model"] == "fake-model"
    chunks = [c async for c in llm.astream("hi", config={"metadata": {"thread_id": "a"}})]
    assert fake.requests[-1].headers["x-ppd-conversation-id"] == "a"
    assert any(c.response_metadata.get("ppd") for c in chunks)


def test_plain_server_has_no_routing_info(fake: FakeOpenAI) -> None:
    fake.routing = False
    msg = make(fake, model="m").invoke("hi")
    assert "ppd" not in msg.response_metadata and msg.content == "answer 1"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_bind_tools_round_trip(fake: FakeOpenAI) -> None:
    llm = make(fake, model="m").bind_tools([add], tool_choice="any")
    fake.tool_call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
    msg = llm.invoke("1+2?")
    assert fake.bodies[-1]["tools"][0]["function"]["name"] == "add"
    assert fake.bodies[-1]["tool_choice"] == "required"
    assert msg.tool_calls == [{"name": "add", "args": {"a": 1, "b": 2}, "id": "call_1", "type": "tool_call"}]
    follow = make(fake, model="m").invoke(["1+2?", msg, ToolMessage("3", tool_call_id="call_1")])
    assert fake.bodies[-1]["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "3"}
    assert follow.content


class Sum(BaseModel):
    a: int
    b: int


def test_with_structured_output_function_calling(fake: FakeOpenAI) -> None:
    llm = make(fake, model="m").with_structured_output(Sum, method="function_calling")
    fake.tool_call = {"id": "call_2", "type": "function", "function": {"name": "Sum", "arguments": '{"a": 4, "b": 5}'}}
    assert llm.invoke("give me two numbers") == Sum(a=4, b=5)


def test_langgraph_thread_id_becomes_the_conversation_id(fake: FakeOpenAI) -> None:
    from langgraph.graph import END, START, MessagesState, StateGraph

    llm = make(fake, model="m")
    graph = StateGraph(MessagesState)
    graph.add_node("chat", lambda state: {"messages": [llm.invoke(state["messages"])]})
    graph.add_edge(START, "chat")
    graph.add_edge("chat", END)
    out = graph.compile().invoke({"messages": [HumanMessage("hi")]}, config={"configurable": {"thread_id": "lg-7"}})
    assert out["messages"][-1].content == "answer 1"
    assert fake.requests[-1].headers["x-ppd-conversation-id"] == "lg-7"


def test_traceparent_of_the_current_span_is_sent(fake: FakeOpenAI) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("app") as span:
        make(fake, model="m").invoke("hi")
    trace_id = fake.requests[-1].headers["traceparent"].split("-")[1]
    assert int(trace_id, 16) == span.get_span_context().trace_id


def test_streaming_invoke_reads_the_thread_id_from_the_run(fake: FakeOpenAI) -> None:
    llm = make(fake, model="m", streaming=True)
    msg = llm.invoke("hi", config={"metadata": {"session_id": "s-9"}})
    assert fake.bodies[-1]["stream"] is True and fake.requests[-1].headers["x-ppd-conversation-id"] == "s-9"
    assert msg.response_metadata["ppd"]["route"] == "pd" and msg.usage_metadata is not None
