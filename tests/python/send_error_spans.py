"""Send spans for three seconds through the OpenTelemetry Python SDK over OTLP/gRPC, one in five with error status,
in several exports (so span counters grow between the collector's flushes, as a live service's do).

Usage: send_error_spans.py ENDPOINT SERVICE
Exits non-zero if any export did not succeed.
"""

import sys
import time

from checked import Checked, failures

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

endpoint, service = sys.argv[1], sys.argv[2]
provider = TracerProvider(resource=Resource.create({"service.name": service, "service.instance.id": f"{service}-1"}))
provider.add_span_processor(
    BatchSpanProcessor(Checked(OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True), "traces"),
                       schedule_delay_millis=200)
)
tracer = provider.get_tracer("vigil.e2e.errors")
deadline = time.monotonic() + 3.0
i = 0
while time.monotonic() < deadline:
    for _ in range(10):
        with tracer.start_as_current_span("POST /checkout") as span:
            if i % 5 == 0:
                span.set_status(Status(StatusCode.ERROR, "payment declined"))
        i += 1
    # Spread over time: a counter rate needs samples taken at different moments.
    time.sleep(0.1)
provider.shutdown()
if failures:
    sys.exit("export failures: " + "; ".join(failures))
