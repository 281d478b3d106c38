"""A real OTLP/HTTP trace receiver for tests: POST /v1/traces with protobuf, every span kept and decoded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.servers import free_port

PROTOBUF = "application/x-protobuf"
TRACES_PATH = "/v1/traces"

Value = str | bool | int | float | list["Value"] | None


@dataclass(frozen=True)
class SpanEvent:
    """One event of a received span."""

    name: str
    time_ns: int
    attributes: dict[str, Value]


@dataclass(frozen=True)
class ReceivedSpan:
    """A span as the collector got it: ids in hex, attributes as Python values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    """Empty for a trace's root."""
    start_ns: int
    end_ns: int
    kind: int
    status_code: int
    status_message: str
    attributes: dict[str, Value]
    events: list[SpanEvent]
    resource: dict[str, Value]
    scope: str


@dataclass
class OtlpReceiver:
    """Accepts what an OTLP/HTTP exporter posts; `spans` grows as batches arrive."""

    port: int = field(default_factory=free_port)
    spans: list[ReceivedSpan] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """Why each request that was not a valid protobuf export was answered with 4xx."""

    @property
    def endpoint(self) -> str:
        """The base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it (the exporter appends /v1/traces)."""
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != PROTOBUF:
            self.refused.append(f"content type {request.content_type}")
            return web.Response(status=415)
        export = ExportTraceServiceRequest()
        try:
            export.ParseFromString(await request.read())
        except DecodeError as exc:
            self.refused.append(f"not a trace export: {exc}")
            return web.Response(status=400)
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            kind=span.kind,
                            status_code=span.status.code,
                            status_message=span.status.message,
                            attributes=_attributes(span.attributes),
                            events=[
                                SpanEvent(e.name, e.time_unix_nano, _attributes(e.attributes))
                                for e in span.events
                            ],
                            resource=resource,
                            scope=scope_spans.scope.name,
                        )
                    )
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type=PROTOBUF)

    def named(self, name: str) -> list[ReceivedSpan]:
        """Every span with this name, in start order."""
        return sorted((s for s in self.spans if s.name == name), key=lambda s: s.start_ns)

    def by_id(self, span_id: str) -> ReceivedSpan | None:
        """The span with this id, if it arrived."""
        return next((s for s in self.spans if s.span_id == span_id), None)

    def ancestors(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        """The span's parent, its parent's parent, and so on up to the root (or a span that never came)."""
        chain: list[ReceivedSpan] = []
        parent = self.by_id(span.parent_span_id) if span.parent_span_id else None
        while parent is not None:
            chain.append(parent)
            parent = self.by_id(parent.parent_span_id) if parent.parent_span_id else None
        return chain

    def tree(self, trace_id: str) -> str:
        """The trace's spans as an indented tree, for a failing assertion's message."""
        spans = sorted((s for s in self.spans if s.trace_id == trace_id), key=lambda s: s.start_ns)
        ids = {s.span_id for s in spans}
        lines: list[str] = []

        def walk(parent: str, depth: int) -> None:
            for span in spans:
                if span.parent_span_id == parent:
                    lines.append(f"{'  ' * depth}{span.name}")
                    walk(span.span_id, depth + 1)

        walk("", 0)
        for orphan in spans:
            if orphan.parent_span_id and orphan.parent_span_id not in ids:
                lines.append(f"(parent {orphan.parent_span_id} missing) {orphan.name}")
        return "\n".join(lines)


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    """An OtlpReceiver listening on 127.0.0.1 until the block ends."""
    receiver = OtlpReceiver()
    app = web.Application()
    app.router.add_post(TRACES_PATH, receiver._traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
        yield receiver
    finally:
        await runner.cleanup()


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Value]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Value:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind == "kvlist_value":
        return str(value.kvlist_value)
    return None
