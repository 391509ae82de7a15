"""Conversation ids: UUIDv7 (time-ordered, what LangSmith recommends for thread ids)."""

from __future__ import annotations

import os
import time
import uuid


def new_conversation_id() -> str:
    """A fresh UUIDv7 string (RFC 9562: 48-bit Unix ms timestamp, version 7, 74 random bits)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits; 74 are used
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 68) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return str(uuid.UUID(int=value))
