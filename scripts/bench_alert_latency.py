"""Latency from an alert condition becoming true to the webhook receiving the notification (issue 19).

Usage: bench_alert_latency.py COLLECTOR_BINARY INTERVAL_SECONDS COUNT

Starts the collector with one rule (`latency_probe > 0`), `group_by: [instance]` and `group_wait: 0s`, and a
webhook sink. COUNT times: a new instance reports `latency_probe = 1` over OTLP/HTTP JSON; the time until the
webhook hears it fire is one measurement. Prints the median, p99 and maximum, and the target (interval + 1 s).
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

binary, interval, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
received = {}
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        now = time.monotonic()
        with lock:
            for alert in body.get("alerts", []):
                if alert["status"] == "firing":
                    received.setdefault(alert["labels"].get("instance"), now)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
threading.Thread(target=sink.serve_forever, daemon=True).start()
work = tempfile.mkdtemp()
with open(f"{work}/rules.yaml", "w") as f:
    f.write("groups:\n  - name: latency\n    rules:\n      - alert: Probe\n        expr: latency_probe > 0\n")
with open(f"{work}/collector.yaml", "w") as f:
    f.write(f"""
receivers:
  otlp:
    protocols:
      http: {{endpoint: '127.0.0.1:14318'}}
exporters:
  nop: {{}}
connectors:
  alerting:
    rule_files: ['{work}/rules.yaml']
    evaluation_interval: {interval}s
    channels:
      hook: {{type: webhook, url: 'http://127.0.0.1:{sink.server_port}/hook'}}
    route: {{channels: [hook], group_by: [instance], group_wait: 0s, group_interval: 1s}}
service:
  pipelines:
    metrics: {{receivers: [otlp], exporters: [alerting]}}
    metrics/alerts: {{receivers: [alerting], exporters: [nop]}}
  telemetry:
    metrics: {{address: '127.0.0.1:18888'}}
""")
collector = subprocess.Popen([binary, "--config", f"{work}/collector.yaml"], stderr=subprocess.DEVNULL)
try:
    for _ in range(200):
        try:
            urllib.request.urlopen("http://127.0.0.1:18888/metrics", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    latencies = []
    import random
    for i in range(count):
        # A random phase against the evaluation schedule: without it every probe would be posted just after the
        # evaluation that announced the previous one, and wait a whole interval.
        time.sleep(random.uniform(0, interval))
        instance = f"probe-{i}"
        body = {"resourceMetrics": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "probe"}},
                {"key": "service.instance.id", "value": {"stringValue": instance}}]},
            "scopeMetrics": [{"metrics": [{"name": "latency_probe", "gauge": {"dataPoints": [
                {"asDouble": 1, "timeUnixNano": str(time.time_ns())}]}}]}]}]}
        request = urllib.request.Request("http://127.0.0.1:14318/v1/metrics", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        started = time.monotonic()
        urllib.request.urlopen(request, timeout=5).read()
        deadline = started + interval + 30
        while time.monotonic() < deadline:
            with lock:
                if instance in received:
                    latencies.append(received[instance] - started)
                    break
            time.sleep(0.005)
        else:
            latencies.append(float("inf"))
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    print(f"evaluation interval {interval}s, {count} alerts: median {p(0.5):.2f}s, p99 {p(0.99):.2f}s, "
          f"max {latencies[-1]:.2f}s; target p99 <= {interval + 1}s: {'met' if p(0.99) <= interval + 1 else 'NOT met'}")
finally:
    collector.terminate()
    collector.wait()
    sink.shutdown()
