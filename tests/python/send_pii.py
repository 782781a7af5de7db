"""Send every PII corpus case through the OpenTelemetry Python SDK over OTLP/gRPC.

Usage: send_pii.py ENDPOINT CORPUS
  ENDPOINT  host:port of the collector's gRPC receiver
  CORPUS    tests/data/pii_corpus.jsonl

Each case that needs no opt-in detector becomes a span name, a span attribute (under the case's key, or
`detail`), an exception event, an error status, a log body and attribute, and a metric attribute. The test checks
that nothing planted comes out of the collector. Exits non-zero if any export did not succeed.
"""

import json
import logging
import sys

from checked import Checked, failures

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

endpoint, corpus_path = sys.argv[1:3]


url = f"http://{endpoint}"
resource = Resource.create({"service.name": "python-pii"})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(BatchSpanProcessor(Checked(OTLPSpanExporter(endpoint=url, insecure=True), "traces")))
tracer = tracer_provider.get_tracer("vigil.e2e.pii")
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(
    BatchLogRecordProcessor(Checked(OTLPLogExporter(endpoint=url, insecure=True), "logs"))
)
log = logging.getLogger("vigil.e2e.pii")
log.setLevel(logging.INFO)
log.propagate = False
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))
reader = PeriodicExportingMetricReader(
    Checked(OTLPMetricExporter(endpoint=url, insecure=True), "metrics"), export_interval_millis=3_600_000
)
meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
counter = meter_provider.get_meter("vigil.e2e.pii").create_counter("pii.requests")

with open(corpus_path) as f:
    cases = [json.loads(line) for line in f if line.strip()]
for case in cases:
    if case.get("opt_in"):
        continue
    text = case["text"]
    key = case.get("key")
    if key:
        # A value that is secret because of its key (`db.password`): sent only under that key.
        with tracer.start_as_current_span("keyed", attributes={key: text}) as span:
            span.add_event("exception", {key: text})
            log.info("keyed value", extra={key: text})
        counter.add(1, {key: text})
        continue
    with tracer.start_as_current_span(text, attributes={"detail": text}) as span:
        span.add_event("exception", {"exception.message": text, "detail": text})
        span.set_status(Status(StatusCode.ERROR, text))
        log.info("%s", text, extra={"detail": text})
    counter.add(1, {"detail": text})

meter_provider.force_flush()
tracer_provider.shutdown()
logger_provider.shutdown()
meter_provider.shutdown()
if failures:
    sys.exit("export failures: " + "; ".join(failures))
