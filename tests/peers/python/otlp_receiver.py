"""An OTLP/HTTP trace receiver for the end-to-end tests: decodes each export
(ExportTraceServiceRequest, protobuf) with the OpenTelemetry project's own message definitions
(opentelemetry-proto) and prints every span as one JSON line on standard output.

usage: otlp_receiver.py PORT [STATUS|huge]   (STATUS: the HTTP status to answer, default 200;
huge: a 200 announcing a 1 GiB body, streamed until the exporter hangs up)
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

MODE = sys.argv[2] if len(sys.argv) > 2 else "200"


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(pairs):
    return {pair.key: value_of(pair.value) for pair in pairs}


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_response(404)
            self.end_headers()
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    line = {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": span.kind,
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                        "status": span.status.code,
                        "status_message": span.status.message,
                        "attributes": attributes(span.attributes),
                        "service": resource.get("service.name"),
                    }
                    print(json.dumps(line), flush=True)
        if MODE == "huge":
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            chunk = bytes(1 << 20)
            try:
                for _ in range(1 << 10):
                    self.wfile.write(chunk)
            except OSError:
                pass
            return
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(int(MODE))
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
