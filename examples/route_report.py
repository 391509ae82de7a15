"""Print each turn's routing decision: route, decode/prefill workers, cached tokens, TTFT.

Start the router first:  ppd-server
Then:  python examples/route_report.py [--turns 4]   (PPD_BASE_URL overrides http://127.0.0.1:30000)
"""

from __future__ import annotations

import argparse

from ppd_sdk import ChatSession

PROMPTS = [
    "Tell me about the planet Mars in two sentences.",
    "How long is a day there?",
    "What is the name of its largest volcano?",
    "Summarize what you told me in one sentence.",
    "Thanks! One more fun fact?",
    "Which probe landed there most recently?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--turns", type=int, default=4, choices=range(1, len(PROMPTS) + 1), metavar=f"1..{len(PROMPTS)}"
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    print(f"{'turn':>4}  {'route':<7} {'decode':<24} {'prefill':<24} {'prompt':>6} {'cached':>6} {'ttft_ms':>8}")
    with ChatSession(system="You are a helpful astronomy tutor. Be brief.") as chat:
        for prompt in PROMPTS[: args.turns]:
            with chat.stream(prompt, temperature=0, max_tokens=args.max_tokens) as stream:
                for _ in stream:
                    pass
            reply = stream.reply
            info = reply.route
            ttft = f"{reply.ttft_s * 1000:.0f}" if reply.ttft_s is not None else "-"
            print(
                f"{reply.turn:>4}  {(info.route if info else '-'):<7} {(info.decode if info else None) or '-':<24} "
                f"{(info.prefill if info else None) or '-':<24} {reply.usage.prompt_tokens:>6} "
                f"{reply.usage.cached_tokens if reply.usage.cached_tokens is not None else '-':>6} {ttft:>8}"
            )
        print(f"conversation {chat.conversation_id}: {chat.turn} turns")


if __name__ == "__main__":
    main()
