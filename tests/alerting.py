"""Test helpers for the alerts service: an HTTP receiver (Alertmanager's webhook target or
our own webhook's) and a real Alertmanager configured to deliver to it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import servers


class Receiver:
    """Collects POSTed requests: (path, headers, raw body). `status` is what it answers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.status = 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append((self.path, dict(self.headers.items()), body))
                    status = receiver.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [json.loads(b) for p, _, b in self.requests if path is None or p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def alertmanager_to(receiver: Receiver, directory: Path) -> servers.Server:
    """A real Alertmanager whose every alert goes, grouped per alert, to `receiver` /am."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "alertmanager.yml"
    config.write_text(f"""\
global:
  resolve_timeout: 5m
route:
  receiver: test
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: test
    webhook_configs:
      - url: {receiver.url}/am
        send_resolved: true
""")
    return servers.Server("alertmanager", servers.free_port(), directory, config_file=config).start()
