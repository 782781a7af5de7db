"""Alertmanager's webhook receiver for the local stack: prints one line per alert of every notification on
stdout, so `docker compose logs alert-log` shows what Alertmanager sent without any mail or Slack set up.

    python3 alert-log.py [PORT]        # default 8080; POST Alertmanager's webhook payload (version 4) to /

A line reads: `FIRING training_failed severity=error job=training-job instance=… | summary`.
Only the standard library: it runs on the plain python image.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SHOWN_LABELS = ("severity", "job", "service_name", "instance")


def lines(payload):
    """The lines a notification prints: one per alert."""
    out = []
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        shown = " ".join(f"{k}={labels[k]}" for k in SHOWN_LABELS if k in labels)
        summary = alert.get("annotations", {}).get("summary", "")
        text = f"{alert.get('status', '?').upper()} {labels.get('alertname', '?')} {shown}"
        out.append(f"{text} | {summary}" if summary else text)
    return out


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            payload = json.loads(self.rfile.read(length))
        except ValueError as e:
            self.send_error(400, f"not JSON: {e}")
            return
        receiver = payload.get("receiver", "?")
        for text in lines(payload):
            print(f"[{receiver}] {text}", flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format, *args):
        pass  # one line per alert is the output; no access log


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"alert-log listening on :{port}", flush=True)
    server.serve_forever()
