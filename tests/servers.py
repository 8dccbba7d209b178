"""``pydevis serve`` in a subprocess on a free port, and a small HTTP client for the tests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, base: str):
        self.base = base

    def call(self, path: str, data: bytes | None = None, headers: dict | None = None,
             method: str | None = None, **query):
        url = self.base + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def json(self, path: str, **query):
        status, _, body = self.call(path, **query)
        return status, json.loads(body)

    def post_json(self, path: str, obj):
        status, _, body = self.call(path, json.dumps(obj).encode(),
                                    {"Content-Type": "application/json"})
        return status, json.loads(body)

    def post_form(self, path: str, fields: dict, files: dict | None = None):
        """multipart/form-data: ``fields`` name -> text, ``files`` name -> (filename, bytes)."""
        b = uuid.uuid4().hex
        parts = []
        for k, v in fields.items():
            parts.append(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                         .encode())
        for k, (fname, data) in (files or {}).items():
            parts.append(f'--{b}\r\nContent-Disposition: form-data; name="{k}"; '
                         f'filename="{fname}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                         .encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{b}--\r\n".encode()
        return self.call(path, body, {"Content-Type": f"multipart/form-data; boundary={b}"})


@contextmanager
def serving(model, *args: str, timeout: float = 60):
    """Start ``pydevis serve MODEL ARGS`` on a free port; yields (Client, port)."""
    port = free_port()
    cmd = [sys.executable, "-c", "from pydevis.cli import main; main()", "serve", str(model),
           "--port", str(port), "-q", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = Client(f"http://127.0.0.1:{port}")
    try:
        end = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"pydevis serve exited {proc.returncode}: "
                                   f"{proc.stderr.read()[-2000:]}")
            try:
                if client.call("/api/model")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > end:
                raise RuntimeError("pydevis serve did not answer in time")
            time.sleep(0.1)
        yield client, port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
