"""A loopback stand-in for the four Hub endpoints ``HfApi.create_repo`` + ``upload_folder`` call: create a repo,
validate the model card's YAML header, preupload (every file answered "regular", so contents come inline in the
commit), and the ndjson commit. It keeps what was committed, so a test compares it with the export byte for byte."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hub:
    def __init__(self, token: str = "hf_test"):
        self.token = token
        self.repos: dict[str, dict] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        self.requests: list[str] = []
        self.cards: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, code: int, obj: dict) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n)
                hub.requests.append(f"POST {self.path}")
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts == ["api", "validate-yaml"]:           # the model card's YAML header
                    hub.cards.append(json.loads(data)["content"])
                    return self._reply(200, {"errors": [], "warnings": []})
                if parts[:3] == ["api", "repos", "create"]:
                    req = json.loads(data)
                    rid = f"{req['organization']}/{req['name']}"
                    hub.repos[rid] = req
                    hub.files.setdefault(rid, {})
                    return self._reply(200, {"url": f"http://{self.headers['Host']}/{rid}", "name": rid})
                if parts[:2] == ["api", "models"] and len(parts) >= 6:
                    rid = "/".join(parts[2:4])
                    if rid not in hub.repos:
                        return self._reply(404, {"error": "Repository not found"})
                    if parts[4] == "preupload":
                        files = json.loads(data)["files"]
                        return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                            "shouldIgnore": False} for f in files]})
                    if parts[4] == "commit":
                        for line in data.splitlines():
                            item = json.loads(line)
                            if item["key"] == "file":
                                v = item["value"]
                                hub.files[rid][v["path"]] = base64.b64decode(v["content"])
                        return self._reply(200, {"commitUrl": f"http://{self.headers['Host']}/{rid}/commit/abc123",
                                                 "commitOid": "abc123" + "0" * 34})
                return self._reply(404, {"error": f"not handled: {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Hub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
