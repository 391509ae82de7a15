"""A tool-using LangGraph agent over langchain_ppd.ChatPPD. LangGraph's thread_id becomes the
PPD conversation id, so every model call of the thread is routed as one conversation.
The tiny SmolLM2 may or may not call the tool; the agent finishes either way.

Start the router first:  ppd-server
Then:  python examples/langgraph_agent.py   (PPD_BASE_URL overrides http://127.0.0.1:30000)
"""

from __future__ import annotations

import uuid

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import GraphRecursionError
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from langchain_ppd import ChatPPD


@tool
def get_weather(city: str) -> str:
    """Return today's weather for a city."""
    return f"It is sunny and 21 C in {city}."


def build_agent(llm: ChatPPD):  # -> CompiledStateGraph
    model = llm.bind_tools([get_weather])
    graph = StateGraph(MessagesState)
    graph.add_node("model", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_node("tools", ToolNode([get_weather]))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)  # tool call -> "tools", else END
    graph.add_edge("tools", "model")
    return graph.compile(checkpointer=InMemorySaver())


def main() -> None:
    agent = build_agent(ChatPPD(temperature=0, max_tokens=64, preset="interactive"))
    # recursion_limit bounds the model<->tools loop whatever the model does.
    config = {"configurable": {"thread_id": f"weather-agent-{uuid.uuid4().hex[:8]}"}, "recursion_limit": 8}
    first = [
        SystemMessage("You can call get_weather(city) to look up the weather."),
        HumanMessage("What's the weather in Paris?"),
    ]
    for turn_messages in (first, [HumanMessage("Should I take an umbrella?")]):
        try:
            state = agent.invoke({"messages": turn_messages}, config)
        except GraphRecursionError:  # the model kept calling tools: stop this turn here
            state = agent.get_state(config).values
        question, last = turn_messages[-1].content, state["messages"][-1]
        called = [m.name for m in state["messages"] if m.type == "tool"]
        ppd = last.response_metadata.get("ppd") or {}
        print(f"user: {question}\nagent: {str(last.content).strip() or '(tool call)'}")
        print(f"  tools called so far: {called or 'none'}; route={ppd.get('route', '-')} turn={ppd.get('turn', '-')}\n")


if __name__ == "__main__":
    main()
