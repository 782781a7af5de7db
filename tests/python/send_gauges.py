"""Send gauges once through the OpenTelemetry Python SDK over OTLP/gRPC, as an application reporting its own
health would.

Usage: send_gauges.py ENDPOINT SERVICE NAME=VALUE...
  ENDPOINT  host:port of the collector's gRPC receiver
  SERVICE   service.name of the resource
  NAME      a gauge name (`error_rate`, `disk_free_pct`, `gpu_usage`...), VALUE its value

Exits non-zero if the export did not succeed.
"""

import sys

from checked import Checked, failures

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

endpoint, service = sys.argv[1], sys.argv[2]
values = {}
for pair in sys.argv[3:]:
    name, value = pair.split("=", 1)
    values[name] = float(value)

reader = PeriodicExportingMetricReader(
    Checked(OTLPMetricExporter(endpoint=f"http://{endpoint}", insecure=True), "metrics"),
    export_interval_millis=3_600_000,
)
# A fixed instance: a second run reports on the same series, as a long-running application would.
resource = Resource.create({"service.name": service, "service.instance.id": f"{service}-1"})
provider = MeterProvider(resource=resource, metric_readers=[reader])
meter = provider.get_meter("vigil.e2e.gauges")
for name, value in values.items():
    meter.create_observable_gauge(name, callbacks=[lambda options, v=value: [Observation(v)]])
provider.force_flush()
provider.shutdown()
if failures:
    sys.exit("export failures: " + "; ".join(failures))
