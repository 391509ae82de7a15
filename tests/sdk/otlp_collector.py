"""A tiny in-test OTLP/HTTP trace collector: the router subprocess exports its spans here
(``OTEL_EXPORTER_OTLP_ENDPOINT``) so a test can check one trace across processes."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class CollectedSpan:
    name: str
    trace_id: int
    span_id: int
    parent_span_id: int | None
    kind: int
    attributes: dict[str, object]


def _value(v: object) -> object:
    field = v.WhichOneof("value")  # type: ignore[attr-defined]
    return getattr(v, field) if field else None


class OTLPCollector:
    """Listens on 127.0.0.1:<port>/v1/traces; ``spans`` grows as exports arrive."""

    def __init__(self) -> None:
        self.spans: list[CollectedSpan] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector._add(body)
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        out = []
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append(
                        CollectedSpan(
                            name=s.name,
                            trace_id=int.from_bytes(s.trace_id, "big"),
                            span_id=int.from_bytes(s.span_id, "big"),
                            parent_span_id=int.from_bytes(s.parent_span_id, "big") if s.parent_span_id else None,
                            kind=s.kind,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                        )
                    )
        with self._lock:
            self.spans.extend(out)

    def wait_for(
        self, predicate: Callable[[list[CollectedSpan]], bool], deadline_s: float = 30.0
    ) -> list[CollectedSpan]:
        """Spans so far, once ``predicate`` holds (bounded wait: export is batched)."""
        end = time.monotonic() + deadline_s
        while True:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans) or time.monotonic() > end:
                return spans
            time.sleep(0.1)

    def __enter__(self) -> OTLPCollector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
