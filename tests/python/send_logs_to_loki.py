"""Send numbered log records through the OpenTelemetry Python SDK over OTLP/gRPC, each inside its own span.

Usage: send_logs_to_loki.py ENDPOINT COUNT
  ENDPOINT  host:port of the collector's gRPC receiver
  COUNT     how many records

Record i has the body "record <i> for <email>" (an address the collector's `mask` must remove), the attribute
`seq` = i, level INFO (every fifth one ERROR), and the trace id of the span around it. Prints one JSON object:
{"<i>": "<trace id hex>", ...}, so the test can check that each record's trace id reached Loki intact. Exits
non-zero if any export did not succeed.
"""

import json
import logging
import sys

from checked import Checked, failures

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

endpoint, count = sys.argv[1], int(sys.argv[2])
url = f"http://{endpoint}"
resource = Resource.create({"service.name": "python-loki", "deployment.environment": "e2e"})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(BatchSpanProcessor(Checked(OTLPSpanExporter(endpoint=url, insecure=True), "traces")))
tracer = tracer_provider.get_tracer("vigil.e2e.loki")
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(
    BatchLogRecordProcessor(Checked(OTLPLogExporter(endpoint=url, insecure=True), "logs"))
)
log = logging.getLogger("vigil.e2e.loki")
log.setLevel(logging.INFO)
log.propagate = False
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))

trace_ids = {}
for i in range(count):
    with tracer.start_as_current_span(f"step {i}") as span:
        trace_ids[str(i)] = format(span.get_span_context().trace_id, "032x")
        emit = log.error if i % 5 == 0 else log.info
        emit("record %d for jane.doe@example.com", i, extra={"seq": i})

tracer_provider.shutdown()
logger_provider.shutdown()
print(json.dumps(trace_ids))
if failures:
    sys.exit("export failures: " + "; ".join(failures))
