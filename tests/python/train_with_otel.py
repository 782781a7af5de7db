"""A training job in Python that knows nothing of MLflow: it sends OTLP (gRPC) to the collector, whose `mlflow`
exporter makes it an MLflow run.

Usage: train_with_otel.py ENDPOINT EXPERIMENT EPOCHS [--die-after N]
  ENDPOINT     host:port of the collector's gRPC receiver
  EXPERIMENT   the resource attribute `mlflow.experiment_name`
  EPOCHS       epochs to run
  --die-after  after N epochs (their telemetry flushed), kill itself with SIGKILL, as a crashed job would

The run: a root span `train` with params `param.lr` and `param.batch_size`; per epoch a `training.loss` gauge
(attribute `epoch`), an `eval.accuracy` gauge, a log record "epoch N done" inside the span. The last epoch's
span ends with status ERROR when EPOCHS is negative (|EPOCHS| epochs, then a failure). Prints the trace id.
"""

import logging
import os
import signal
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

endpoint, experiment, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
die_after = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--die-after" else None
fail = epochs < 0
epochs = abs(epochs)
url = f"http://{endpoint}"
resource = Resource.create(
    {"service.name": "py-trainer", "service.instance.id": f"py-{os.getpid()}", "mlflow.experiment_name": experiment}
)
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(BatchSpanProcessor(Checked(OTLPSpanExporter(endpoint=url, insecure=True), "traces")))
reader = PeriodicExportingMetricReader(
    Checked(OTLPMetricExporter(endpoint=url, insecure=True), "metrics"), export_interval_millis=200
)
meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(
    BatchLogRecordProcessor(Checked(OTLPLogExporter(endpoint=url, insecure=True), "logs"))
)
log = logging.getLogger("py.trainer")
log.setLevel(logging.INFO)
log.propagate = False
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))

tracer = tracer_provider.get_tracer("py.trainer")
meter = meter_provider.get_meter("py.trainer")
loss = meter.create_gauge("training.loss")
accuracy = meter.create_gauge("eval.accuracy")
ignored = meter.create_counter("http.requests")


def flush():
    tracer_provider.force_flush()
    meter_provider.force_flush()
    logger_provider.force_flush()


with tracer.start_as_current_span("train", attributes={"param.lr": 0.01, "param.batch_size": 32}) as span:
    print(format(span.get_span_context().trace_id, "032x"), flush=True)
    for epoch in range(1, epochs + 1):
        loss.set(1.0 / epoch, {"epoch": epoch})
        accuracy.set(0.5 + epoch / 100, {"epoch": epoch})
        ignored.add(1)
        log.info("epoch %d done", epoch)
        if die_after is not None and epoch == die_after:
            flush()
            os.kill(os.getpid(), signal.SIGKILL)
    if fail:
        log.error("training diverged")
        span.set_status(Status(StatusCode.ERROR, "diverged"))

tracer_provider.shutdown()
meter_provider.shutdown()
logger_provider.shutdown()
if failures:
    sys.exit("export failures: " + "; ".join(failures))
