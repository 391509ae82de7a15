"""Fixtures: in-process ppd-workers on the synthetic model behind aiohttp test servers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer

from ppd_engine.config import EngineConfig
from ppd_engine.http_api import create_app
from ppd_engine.worker import Worker, build_worker

torch.set_num_threads(1)

SYNTHETIC = dict(
    model="synthetic:7",
    dtype="float32",
    max_total_tokens=4096,
    page_size=8,
    chunked_prefill_size=64,
    disaggregation_bootstrap_port=0,
    kv_transfer_timeout=5.0,
)


@asynccontextmanager
async def serve_worker(**overrides: Any) -> AsyncIterator[tuple[TestClient, Worker]]:
    config = EngineConfig(**{**SYNTHETIC, **overrides}).validate()
    worker = build_worker(config)
    client = TestClient(TestServer(create_app(worker), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, worker
    finally:
        await client.close()


@pytest.fixture(scope="module")
async def unified():
    async with serve_worker() as pair:
        yield pair


@pytest.fixture(scope="module")
async def prefill():
    async with serve_worker(disaggregation_mode="prefill") as pair:
        yield pair


@pytest.fixture(scope="module")
async def decode():
    async with serve_worker(
        disaggregation_mode="decode",
        disaggregation_decode_enable_radix_cache=True,
        disaggregation_decode_enable_conditional_agg=True,
    ) as pair:
        yield pair


async def sse_chunks(response) -> list:
    """The payloads of an SSE response: JSON objects, and the final ``[DONE]`` as a string."""
    chunks = []
    async for line in response.content:
        line = line.strip()
        if line.startswith(b"data: "):
            payload = line[6:]
            chunks.append(payload.decode() if payload == b"[DONE]" else json.loads(payload))
    return chunks
