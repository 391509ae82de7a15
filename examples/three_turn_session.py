"""A three-turn chat with ppd_sdk.ChatSession against a PPD router.

Start the router first (embedded 1P1D cluster with SmolLM2):  ppd-server
Then:  python examples/three_turn_session.py   (PPD_BASE_URL overrides http://127.0.0.1:30000)
"""

from __future__ import annotations

from ppd_sdk import SLO, ChatSession


def main() -> None:
    questions = [
        "What is the capital of France?",
        "And what river flows through it?",
        "Name one famous museum there.",
    ]
    # Greedy decoding and short answers keep the CPU model quick and the output stable.
    with ChatSession(system="You are a concise assistant.", preset="interactive", slo=SLO(ttft_ms=2000)) as chat:
        print(f"conversation {chat.conversation_id}")
        for question in questions:
            reply = chat.send(question, temperature=0, max_tokens=48)
            route = reply.route.route if reply.route else "n/a (plain OpenAI-compatible server)"
            print(f"\n[turn {reply.turn}] user: {question}")
            print(f"assistant: {reply.text.strip()}")
            print(
                f"  route={route} cached_tokens={reply.usage.cached_tokens} prompt_tokens={reply.usage.prompt_tokens}"
            )


if __name__ == "__main__":
    main()
