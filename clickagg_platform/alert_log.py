"""A tiny Alertmanager webhook receiver: each notification becomes one JSON line per alert in a
log file, so the demo and the tests can read what Alertmanager actually delivered.

Only what on-call needs is kept (status, labels, annotations, times); Alertmanager's payload
carries no secrets, and nothing from the request headers is written.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def alert_lines(payload: dict) -> list[str]:
    """One JSON line per alert of an Alertmanager webhook payload (version 4)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise ValueError("not an Alertmanager webhook payload: no 'alerts' list")
    lines = []
    for a in payload["alerts"]:
        labels = a.get("labels") or {}
        lines.append(
            json.dumps(
                {
                    "alertname": labels.get("alertname", ""),
                    "status": a.get("status", payload.get("status", "")),
                    "labels": labels,
                    "annotations": a.get("annotations") or {},
                    "startsAt": a.get("startsAt"),
                    "endsAt": a.get("endsAt"),
                    "receiver": payload.get("receiver", ""),
                },
                sort_keys=True,
            )
        )
    return lines


def make_server(host: str, port: int, path: Path) -> ThreadingHTTPServer:
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            size = int(self.headers.get("Content-Length") or 0)
            try:
                lines = alert_lines(json.loads(self.rfile.read(size) or b"null"))
            except ValueError as err:
                self.send_error(400, str(err))
                return
            with lock, path.open("a") as f:
                f.writelines(line + "\n" for line in lines)
            self.send_response(200)
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args) -> None:  # quiet: the log file is the output
            pass

    return ThreadingHTTPServer((host, port), Handler)
