"""The simulated users of benchmarks/demo_load.py: :class:`HttpUser` speaks Gradio 6's HTTP
API with the standard library (cheap: the 2 cores measure the server, not its clients);
:class:`GradioClientUser` makes the same two requests through gradio_client, for comparison."""
from __future__ import annotations

import http.client
import json
import urllib.parse
from pathlib import Path


def case_inputs(files: list, slice_index: int, box: str) -> list:
    """/predict_case's inputs: series chosen automatically, the box, no centre, default size."""
    return [files, "", "", slice_index, box, "", 0]


BOUNDARY = "spinefx-load-boundary-7f3a9c"   # fixed: the same run sends the same bytes


class HttpUser:
    """One simulated user speaking Gradio 6's HTTP API with the standard library over one
    keep-alive connection: files go up first (POST /gradio_api/upload, multipart), a call is
    POST /gradio_api/call/<api> -> event id, then GET .../<event id> (server-sent events,
    ``complete`` or ``error``); the overlay PNG is then fetched, as gradio_client does.
    ``session``: the session hash all its calls carry (one session per user, as a browser tab
    or a gradio_client has); None: none, so gradio makes each call its own session."""

    def __init__(self, url: str, files: list[str], session: str | None = None) -> None:
        self.session = session
        where = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port,
                                               timeout=600)
        parts = [(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; '
                  f'filename="{Path(f).name}"\r\nContent-Type: application/octet-stream'
                  '\r\n\r\n').encode() + Path(f).read_bytes() + b"\r\n" for f in files]
        self.upload_body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()

    def send(self, method: str, path: str, body: bytes | None = None,
             content_type: str | None = None) -> bytes:
        """The whole response body; an HTTP status other than 200 raises."""
        self.conn.request(method, path, body=body,
                          headers={"Content-Type": content_type} if content_type else {})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status} {method} {path}: {data[:200]!r}")
        return data

    def call(self, api: str, inputs: list) -> list:
        body = {"data": inputs, **({"session_hash": self.session} if self.session else {})}
        posted = self.send("POST", f"/gradio_api/call/{api}", json.dumps(body).encode(),
                           "application/json")
        # the stream ends after the event's last message (this user has no other event open)
        stream = self.send("GET", f"/gradio_api/call/{api}/{json.loads(posted)['event_id']}")
        for message in stream.decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in message.splitlines() if ": " in line)
            if fields.get("event") == "complete":
                return json.loads(fields["data"])
            if fields.get("event") == "error":
                raise RuntimeError(f"/{api}: error event {fields.get('data', '')[:200]}")
        raise RuntimeError(f"/{api}: the stream ended without a result")

    def answer(self, outputs: list) -> dict:
        """The result JSON, after fetching the overlay (a missing or non-PNG one raises)."""
        result, overlay = outputs
        if not isinstance(result, dict) or result.get("status") != "ok":
            return result if isinstance(result, dict) else {"error": repr(result)[:200]}
        where = urllib.parse.urlsplit((overlay or {}).get("url") or "")
        png = self.send("GET", where.path + (f"?{where.query}" if where.query else ""))
        if not png.startswith(b"\x89PNG"):
            raise RuntimeError("the overlay is not a PNG")
        return result

    def predict_case(self, slice_index: int, box: str) -> dict:
        paths = json.loads(self.send("POST", "/gradio_api/upload", self.upload_body,
                                     f"multipart/form-data; boundary={BOUNDARY}"))
        files = [{"path": p, "meta": {"_type": "gradio.FileData"}} for p in paths]
        return self.answer(self.call("predict_case", case_inputs(files, slice_index, box)))

    def predict_example(self) -> dict:
        return self.answer(self.call("predict_example", ["phantom_malignant"]))


class GradioClientUser:
    """The same two requests through gradio_client (for comparison: it costs the client more
    CPU than the server; it uploads each file of a list separately)."""

    def __init__(self, url: str, files: list[str], session: str | None = None) -> None:
        from gradio_client import Client  # it makes its own session (``session`` unused)

        self.client, self.files = Client(url, verbose=False), files

    def predict_case(self, slice_index: int, box: str) -> dict:
        from gradio_client import handle_file

        files = [handle_file(f) for f in self.files]
        return self.client.predict(*case_inputs(files, slice_index, box),
                                   api_name="/predict_case")[0]

    def predict_example(self) -> dict:
        return self.client.predict("phantom_malignant", api_name="/predict_example")[0]
