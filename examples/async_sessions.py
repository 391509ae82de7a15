"""Three concurrent conversations with ppd_sdk.AsyncChatSession, each with its own SLO preset.

Start the router first:  ppd-server
Then:  python examples/async_sessions.py   (PPD_BASE_URL overrides http://127.0.0.1:30000)
"""

from __future__ import annotations

import asyncio

from ppd_sdk import AsyncChatSession

TOPICS = {
    "interactive": ["Give me a one-line fact about cats.", "And one about dogs?"],
    "balanced": ["Name a primary color.", "Name another one."],
    "throughput": ["Write a haiku about the sea.", "Now one about mountains."],
}


async def converse(preset: str, questions: list[str]) -> list[str]:
    lines = []
    async with AsyncChatSession(system="Answer in one short sentence.", preset=preset) as chat:
        for question in questions:
            # Stream the first turn, send the second: both keep the same history and id.
            if chat.turn == 0:
                stream = chat.stream(question, temperature=0, max_tokens=40)
                text = "".join([delta async for delta in stream])
                reply = await stream.get_reply()
            else:
                reply = await chat.send(question, temperature=0, max_tokens=40)
                text = reply.text
            route = reply.route.route if reply.route else "-"
            lines.append(
                f"{preset:<11} turn {reply.turn} route={route:<7} cached={reply.usage.cached_tokens} | {text.strip()}"
            )
    return lines


async def main() -> None:
    results = await asyncio.gather(*(converse(preset, qs) for preset, qs in TOPICS.items()))
    for lines in results:
        print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
