"""Send traces, metrics and logs to an OTLP endpoint with the OpenTelemetry Python SDK.

Usage: send_otlp.py PROTOCOL ENDPOINT MANIFEST RUN_ID
  PROTOCOL  grpc | http/protobuf | http/json
  ENDPOINT  host:port of the collector's receiver for that protocol
  MANIFEST  where to write a JSON description of everything that was sent

The end-to-end tests compare the manifest field by field with what the collector exported.
Exits non-zero if any export did not succeed.
"""

import json
import logging
import os
import sys

from checked import Checked, failures

from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

protocol, endpoint, manifest_path, run_id = sys.argv[1:5]
# With VIGIL_CA_FILE set, the client speaks TLS and trusts only that CA.
ca_file = os.environ.get("VIGIL_CA_FILE")
scheme = "https" if ca_file else "http"

if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    url = lambda signal: f"{scheme}://{endpoint}"  # noqa: E731
    if ca_file:
        import grpc

        with open(ca_file, "rb") as f:
            kwargs = {"insecure": False, "credentials": grpc.ssl_channel_credentials(f.read())}
    else:
        kwargs = {"insecure": True}
elif protocol == "http/protobuf":
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    url = lambda signal: f"{scheme}://{endpoint}/v1/{signal}"  # noqa: E731
    kwargs = {"certificate_file": ca_file} if ca_file else {}
elif protocol == "http/json":
    from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.json.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter

    url = lambda signal: f"http://{endpoint}/v1/{signal}"  # noqa: E731
    kwargs = {}
else:
    sys.exit(f"unknown protocol {protocol!r}")



resource = Resource.create({"service.name": "python-e2e", "vigil.run_id": run_id, "deployment.environment": protocol})

tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(SimpleSpanProcessor(Checked(OTLPSpanExporter(endpoint=url("traces"), **kwargs), "traces")))
tracer = tracer_provider.get_tracer("vigil.e2e", "1.2.3")

logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(SimpleLogRecordProcessor(Checked(OTLPLogExporter(endpoint=url("logs"), **kwargs), "logs")))
log = logging.getLogger("vigil.e2e.training")
log.setLevel(logging.DEBUG)
log.propagate = False
log.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=logger_provider))

metric_exporter = Checked(OTLPMetricExporter(endpoint=url("metrics"), **kwargs), "metrics")
reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
meter = meter_provider.get_meter("vigil.e2e", "1.2.3")
counter = meter.create_counter("e2e.requests", unit="1", description="Requests handled")
histogram = meter.create_histogram("e2e.latency", unit="s", description="Request latency")

with tracer.start_as_current_span("train", kind=SpanKind.SERVER, attributes={
    "model.type": "lightgbm", "epochs": 42, "loss": 0.234, "gpu": True, "tags": ["a", "b"], "unicode": "данные ✓",
}) as parent:
    with tracer.start_as_current_span("epoch", kind=SpanKind.INTERNAL) as child:
        child.add_event("checkpoint", {"step": 7})
        child.set_status(Status(StatusCode.ERROR, "diverged"))
        log.warning("Training step failed", extra={"experiment_id": "exp_001", "step": 7})
    counter.add(3, {"route": "/train"})
    counter.add(2, {"route": "/train"})
    histogram.record(0.5, {"route": "/train"})
    histogram.record(1.5, {"route": "/train"})
    trace_id = format(parent.get_span_context().trace_id, "032x")
    parent_id = format(parent.get_span_context().span_id, "016x")
    child_id = format(child.get_span_context().span_id, "016x")

meter_provider.force_flush()
tracer_provider.shutdown()
logger_provider.shutdown()
meter_provider.shutdown()

manifest = {
    "trace_id": trace_id,
    "parent_span_id": parent_id,
    "child_span_id": child_id,
    "log_body": "Training step failed",
    "counter_total": 5,
    "histogram_count": 2,
    "histogram_sum": 2.0,
}
with open(manifest_path, "w") as f:
    json.dump(manifest, f)
if failures:
    sys.exit("export failures: " + "; ".join(failures))
