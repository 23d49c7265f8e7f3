"""A real OTLP/HTTP receiver for tests: what the service exports, decoded with OpenTelemetry's own protobuf
definitions (opentelemetry-proto), kept as plain span records."""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from encoder_serve.service.testing import free_port


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict
    links: list[tuple[str, str]]  # (trace id, span id)
    start_ns: int
    end_ns: int
    resource: dict = field(default_factory=dict)


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver:
    """POST /v1/traces on a free port; `spans` holds everything received."""

    def __init__(self):
        self.spans: list[Span] = []
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                receiver.requests += 1
                for resource_spans in request.resource_spans:
                    resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for s in scope_spans.spans:
                            receiver.spans.append(Span(
                                s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.kind,
                                {a.key: value(a.value) for a in s.attributes},
                                [(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                                s.start_time_unix_nano, s.end_time_unix_nano, resource))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate, timeout: float = 20.0) -> list[Span]:
        """The spans once `predicate(spans)` holds; fails the test after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(self.spans):
            if time.monotonic() > deadline:
                raise AssertionError(f"spans never satisfied the condition; got {[s.name for s in self.spans]}")
            time.sleep(0.05)
        return self.spans
