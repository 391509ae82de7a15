"""The router's OpenAPI 3.0 description, served at ``GET /openapi.json``.

It documents what the front door itself validates (the fields it routes on: ``model``,
``messages`` / ``prompt`` / ``text``, ``stream``, ``max_tokens``, the ``ppd`` hints and their
headers) and leaves every other OpenAI field open (``additionalProperties``), because the router
forwards those untouched to the workers. Error answers share the OpenAI error schema. Fuzzers
(schemathesis) and client generators read it; it is data, built once per app.
"""

from __future__ import annotations

from typing import Any

from ppd_sdk import wire

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
        }
    },
}

_ID = {"type": "string", "minLength": 1, "maxLength": wire.MAX_CONVERSATION_ID_LEN}
_MS = {"type": "number", "exclusiveMinimum": True, "minimum": 0}
_PPD = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "conversation_id": _ID,
        "parent_conversation_id": _ID,
        "turn": {"type": "integer", "minimum": 1},
        "preset": {"type": "string", "enum": sorted(wire.PRESETS)},
        "weights": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "ttft": {"type": "number", "minimum": 0, "maximum": 1000},
                "tpot": {"type": "number", "minimum": 0, "maximum": 1000},
            },
        },
        "slo": {"type": "object", "additionalProperties": False, "properties": {"ttft_ms": _MS, "tpot_ms": _MS}},
    },
}
_MAX_TOKENS = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {"role": {"type": "string"}, "content": {"nullable": True}},
    "additionalProperties": True,
}
_COMMON = {
    "model": {"type": "string"},
    "stream": {"type": "boolean"},
    "ppd": _PPD,
    "prompt_cache_key": _ID,
    "stream_options": {"type": "object"},
}

_CHAT = {
    "type": "object",
    "required": ["messages"],
    "additionalProperties": True,
    "properties": {
        **_COMMON,
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "max_tokens": _MAX_TOKENS,
        "max_completion_tokens": _MAX_TOKENS,
        "tools": {"type": "array"},
    },
}
_COMPLETION = {
    "type": "object",
    "required": ["prompt"],
    "additionalProperties": True,
    "properties": {
        **_COMMON,
        "max_tokens": _MAX_TOKENS,
        "prompt": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
                {"type": "array", "minItems": 1, "items": {"type": "integer"}},
            ]
        },
    },
}
_GENERATE = {
    "type": "object",
    "additionalProperties": True,
    "properties": {
        "text": {"type": "string", "minLength": 1},
        "input_ids": {"type": "array", "items": {"type": "integer"}},
        "stream": {"type": "boolean"},
        "ppd": _PPD,
        "sampling_params": {"type": "object", "properties": {"max_new_tokens": _MAX_TOKENS}},
    },
}

_HINT_HEADERS = [
    {"name": wire.HEADER_CONVERSATION_ID, "in": "header", "required": False, "schema": _ID},
    {"name": wire.HEADER_PARENT_CONVERSATION_ID, "in": "header", "required": False, "schema": _ID},
    {"name": wire.HEADER_TURN, "in": "header", "required": False, "schema": {"type": "integer", "minimum": 1}},
    {"name": wire.HEADER_SLO_TTFT_MS, "in": "header", "required": False, "schema": _MS},
    {"name": wire.HEADER_SLO_TPOT_MS, "in": "header", "required": False, "schema": _MS},
]


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": "OpenAI-style error", "content": {"application/json": {"schema": _ERROR}}}
        for s in statuses
    }


def _inference(summary: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": _HINT_HEADERS,
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {
                "200": {"description": "the worker's answer (JSON, or text/event-stream when stream)"},
                **_errors(400, 401, 404, 413, 429, 503),
            },
        }
    }


def openapi_document() -> dict[str, Any]:
    ok_json = {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ppd-server",
            "version": "1",
            "description": "OpenAI-compatible PPD router (prefill / prefill-capable decode).",
        },
        "paths": {
            "/v1/chat/completions": _inference("OpenAI chat completions, routed per turn", _CHAT),
            "/v1/completions": _inference("OpenAI completions, routed per turn", _COMPLETION),
            "/generate": _inference("SGLang native generate, routed per turn", _GENERATE),
            "/v1/models": {"get": {"summary": "served models", "responses": {"200": ok_json, **_errors(401)}}},
            "/health": {
                "get": {
                    "summary": "200 when a P/D pair or a unified worker is healthy",
                    "responses": {"200": ok_json, "503": ok_json},
                }
            },
        },
    }
