"""A sink for exporter benchmarks: answers every POST at once (204 for Loki's push and OTLP paths, 200 with an
empty OTLP response for /v1/logs), after reading the body. Usage: bench_sink.py PORT"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("/v1/logs") and not self.path.startswith("/otlp"):
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
        else:
            self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
