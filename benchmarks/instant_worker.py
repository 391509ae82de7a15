"""A fast fake SGLang worker for router benchmarks and load tests: a minimal keep-alive HTTP/1.1
server (one asyncio Protocol, uvloop when installed) answering with canned bodies, so the
router, not the worker, is what a benchmark measures.

    python benchmarks/instant_worker.py MODE PORT [--tokens N] [--token-interval-ms MS] [--count-ids]

MODE is ``prefill``, ``decode`` or ``null`` (its ``/server_info`` disaggregation mode). It answers
``/health``, ``/server_info``, ``/v1/loads``, ``/v1/models``, ``/model_info`` (the router's polls)
and generations on ``/v1/chat/completions``, ``/v1/completions``, ``/generate``: a non-streamed
request gets a whole chat answer at once; a ``"stream": true`` chat request gets an SSE answer
(role, ``--tokens`` token events, finish, usage, ``[DONE]``) as HTTP/1.1 chunks - all in one write
by default, or one token event every ``--token-interval-ms`` (the decode side of a long-lived
stream; a prefill worker always answers at once, as SGLang's prefill answers when its KV is sent).

``--count-ids``: every generation's ``x-request-id`` is counted, and ``GET /_instant/ids`` returns
``{"ids": {request_id: times seen}}`` - how a load test proves at the worker that each request
arrived exactly once. Requests on one connection are answered in order (HTTP/1.1).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import sys

GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions", "/generate")
_INFO = {
    "disaggregation_mode": "{mode}",
    "disaggregation_bootstrap_port": 0,
    "model_path": "fake/fake-model",
    "served_model_name": "fake-model",
    "max_total_num_tokens": 1_000_000,
    "kv_bytes_per_token": 1000,
    "disaggregation_decode_enable_radix_cache": True,
    "disaggregation_decode_enable_conditional_agg": True,
    "page_size": 1,
    "dp_size": 1,
}
_CHAT = json.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "length"}],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 1,
            "total_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
).encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def sse_answer_parts(tokens: int) -> list[bytes]:
    """A streamed chat answer as HTTP/1.1 pieces: [headers + role event, token 1, ..., token N +
    finish + usage + [DONE] + the last chunk]. Joined, it is the whole answer."""
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake-model"}

    def event(obj: dict) -> bytes:
        return _chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

    usage = {
        "prompt_tokens": 9,
        "completion_tokens": tokens,
        "total_tokens": 9 + tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    parts = [head + event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})]
    token = event({**base, "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]})
    parts += [token] * tokens
    parts[-1] += (
        event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
        + event({**base, "choices": [], "usage": usage})
        + _chunk(b"data: [DONE]\n\n")
        + b"0\r\n\r\n"
    )
    return parts


def responses(mode: str) -> dict[str, bytes]:
    info = json.dumps(_INFO).replace("{mode}", mode).encode()
    loads = json.dumps(
        {
            "timestamp": 0,
            "version": "fake",
            "loads": [
                {
                    "dp_rank": 0,
                    "num_running_reqs": 0,
                    "num_waiting_reqs": 0,
                    "num_used_tokens": 0,
                    "max_total_num_tokens": 1_000_000,
                }
            ],
        }
    ).encode()
    models = json.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "sglang"}]})
    model_info = json.dumps(
        {
            "model_path": "fake/fake-model",
            "tokenizer_path": "fake/fake-model",
            "is_generation": True,
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
        }
    ).encode()
    gen = json.dumps(
        {
            "text": "x",
            "output_ids": [1],
            "meta_info": {
                "id": "g",
                "prompt_tokens": 9,
                "completion_tokens": 1,
                "cached_tokens": 0,
                "finish_reason": {"type": "length", "length": 1},
            },
        }
    ).encode()
    return {
        "/health": b"",
        "/health_generate": b"",
        "/server_info": info,
        "/get_server_info": info,
        "/v1/loads": loads,
        "/model_info": model_info,
        "/get_model_info": model_info,
        "/v1/models": models.encode(),
        "/get_load": b"[]",
        "/v1/chat/completions": _CHAT,
        "/v1/completions": _CHAT,
        "/generate": gen,
    }


class WorkerState:
    """What every connection of one worker process shares."""

    def __init__(self, mode: str, tokens: int, interval_s: float, count_ids: bool) -> None:
        self.responses = responses(mode)
        self.stream_parts = sse_answer_parts(tokens)
        self.stream_answer = b"".join(self.stream_parts)
        self.interval_s = interval_s if mode != "prefill" else 0.0
        self.ids: collections.Counter[str] | None = collections.Counter() if count_ids else None


def _plain(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
        b"" + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class InstantWorker(asyncio.Protocol):
    def __init__(self, state: WorkerState) -> None:
        self.state = state
        self.buf = b""
        self.pending: collections.deque[list[bytes]] = collections.deque()  # answers after a paced stream
        self.streaming = False

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1"):  # e.g. a gRPC / HTTP/2 preface
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                self.transport.close()
                return
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
            rest = self.buf[end + 4 :]
            if headers.get("transfer-encoding", "").lower() == "chunked":
                done = rest.find(b"0\r\n\r\n")
                if done < 0:
                    return
                body, self.buf = rest[:done], rest[done + 5 :]
            else:
                n = int(headers.get("content-length", "0"))
                if len(rest) < n:
                    return
                body, self.buf = rest[:n], rest[n:]
            self._answer(parts[1].split("?")[0], headers, body)

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> None:
        st = self.state
        if path == "/_instant/ids":
            self._send([_plain(b"200 OK", json.dumps({"ids": st.ids or {}}).encode())])
            return
        if st.ids is not None and path in GENERATION_PATHS:
            st.ids[headers.get("x-request-id", "")] += 1
        if path == "/v1/chat/completions" and (b'"stream": true' in body or b'"stream":true' in body):
            self._send(st.stream_parts if st.interval_s > 0 else [st.stream_answer])
            return
        answer = st.responses.get(path)
        self._send([_plain(b"200 OK", answer) if answer is not None else _plain(b"404 Not Found", b"")])

    def _send(self, parts: list[bytes]) -> None:
        if self.streaming:
            self.pending.append(parts)
        elif len(parts) == 1:
            self.transport.write(parts[0])
        else:
            self.streaming = True
            self._step(parts, 0)

    def _step(self, parts: list[bytes], i: int) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(parts[i])
        if i + 1 < len(parts):
            asyncio.get_running_loop().call_later(self.state.interval_s, self._step, parts, i + 1)
            return
        self.streaming = False
        while self.pending and not self.streaming:
            self._send(self.pending.popleft())


def use_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def serve(mode: str, port: int, tokens: int = 1, interval_ms: float = 0.0, count_ids: bool = False) -> None:
    use_uvloop()
    state = WorkerState(mode, tokens, interval_ms / 1000.0, count_ids)
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(lambda: InstantWorker(state), "127.0.0.1", port, backlog=4096))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    loop.run_forever()
    server.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("prefill", "decode", "null"))
    ap.add_argument("port", type=int)
    ap.add_argument("--tokens", type=int, default=1, help="token events in a streamed answer (default 1)")
    ap.add_argument("--token-interval-ms", type=float, default=0.0, help="pace of a decode stream (default 0: at once)")
    ap.add_argument("--count-ids", action="store_true", help="count x-request-id per generation (GET /_instant/ids)")
    args = ap.parse_args(argv)
    if args.tokens < 1 or args.token_interval_ms < 0:
        ap.error("--tokens must be >= 1 and --token-interval-ms >= 0")
    serve(args.mode, args.port, args.tokens, args.token_interval_ms, args.count_ids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
