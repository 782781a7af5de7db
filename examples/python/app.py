"""A small Python service that sends traces, metrics and logs to the Vigil collector over OTLP/HTTP.

    python3 -m venv .venv && .venv/bin/pip install -r examples/python/requirements.txt
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 .venv/bin/python examples/python/app.py

The OpenTelemetry SDK is set up in code, so no `opentelemetry-instrument` wrapper and no auto-instrumentation
variables are needed. The exporters read OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318) and the
other OTEL_* variables; OTEL_SERVICE_NAME overrides the service name. The collector's debug exporter prints what
arrives: the `checkout` spans (one with an error), the `orders.processed` counter and `order.amount` histogram,
and the log records, which carry the trace ids of the spans they were written in.
"""

import logging
import random
import time

from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

resource = Resource.create({"service.name": "shop-python", "service.version": "1.0.0"})

tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(tracer_provider)

meter_provider = MeterProvider(
    resource=resource,
    metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=1000)],
)
metrics.set_meter_provider(meter_provider)

logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
set_logger_provider(logger_provider)
logging.getLogger().addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))
logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("shop")

tracer = trace.get_tracer("shop")
meter = metrics.get_meter("shop")
processed = meter.create_counter("orders.processed", description="Orders handled")
amount = meter.create_histogram("order.amount", unit="USD", description="Order totals")

for order in range(5):
    with tracer.start_as_current_span("checkout", attributes={"order.id": order}) as span:
        total = round(random.uniform(5, 500), 2)
        amount.record(total, {"currency": "USD"})
        if order == 3:
            span.set_status(Status(StatusCode.ERROR, "payment declined"))
            log.error("payment declined for order %s", order)
            processed.add(1, {"outcome": "failed"})
        else:
            log.info("order %s paid: %s USD", order, total)
            processed.add(1, {"outcome": "paid"})
    time.sleep(0.01)

# Flush everything before exiting (the batch processors and the metric reader send in the background).
tracer_provider.shutdown()
meter_provider.shutdown()
logger_provider.shutdown()
