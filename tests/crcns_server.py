"""A local stand-in for crcns.org and download.crcns.org, for the fetch tests.

One ``ThreadingHTTPServer`` on 127.0.0.1 (port chosen by the OS) answers:

- ``POST /login_form``: the Plone login form; the right fields and
  credentials set the ``__ac`` session cookie, anything else gets the login
  page again (status 200, HTML), as crcns.org does; or, with
  ``login_redirect`` set, a redirect there with the login name in the query;
- ``GET /dl/aa-4``: "Logged in as <user>" with a valid cookie, a login page otherwise;
- ``GET /dl/aa-4/filelist.txt``: ``aa-4/<name> <size>`` per served file;
- ``GET /dl/aa-4/<name>``: the file, honouring ``Range: bytes=<n>-`` (206 +
  ``Content-Range``, 416 past the end); an HTML page (status 200) when not
  logged in or when the file is missing, as download.crcns.org does.

``FakeCRCNS`` attributes steer the misbehaviours the tests need (cut
connections, ignored Range headers, a custom file list) and ``requests``
records every request.
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

LOGIN_FIELDS = {"form.submitted": "1", "js_enabled": "0", "pwd_empty": "0", "submit": "Log in"}


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class FakeCRCNS:
    """The server's state; use as a context manager to run it."""

    username: str
    password: str
    files: dict[str, bytes] = field(default_factory=dict)
    #: The text of filelist.txt; None lists every served file with its size.
    filelist: str | None = None
    #: How many file answers are cut off half-way through the body.
    cuts: int = 0
    honour_range: bool = True
    #: Served with this Content-Type (and no HTML detection from the header).
    content_type: str = "application/x-gzip"
    #: When set, the login form answers with a redirect here, the login name in the query
    #: (as a Plone ``came_from`` redirect may): the URL a failure could echo.
    login_redirect: str | None = None
    requests: list[Request] = field(default_factory=list)
    sessions: set[str] = field(default_factory=set)

    def __enter__(self) -> FakeCRCNS:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def login_url(self) -> str:
        return f"{self.base}/login_form"

    @property
    def download_url(self) -> str:
        return f"{self.base}/dl"

    def file_requests(self, name: str) -> list[Request]:
        """The requests made for ``/dl/aa-4/<name>``."""
        return [r for r in self.requests if r.path == f"/dl/aa-4/{name}"]


def _handler(state: FakeCRCNS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            self._record()
            form = {key: values[0] for key, values in parse_qs(body, keep_blank_values=True).items()}
            if state.login_redirect:
                query = urlencode({"came_from": "/dl/aa-4", "__ac_name": form.get("__ac_name", "")})
                return self._send(302, b"", {"Location": f"{state.login_redirect}?{query}"})
            accepted = (
                urlsplit(self.path).path == "/login_form"
                and all(form.get(key) == value for key, value in LOGIN_FIELDS.items())
                and form.get("__ac_name") == state.username
                and form.get("__ac_password") == state.password
            )
            if not accepted:
                return self._html("<h1>Log in</h1><p>Login failed. Both login name and password "
                                  "are case sensitive.</p>")
            token = secrets.token_hex(16)
            state.sessions.add(token)
            self._html("<p>You are now logged in.</p>", cookie=token)

        def do_GET(self) -> None:
            self._record()
            path = urlsplit(self.path).path.rstrip("/")
            cookie = SimpleCookie(self.headers.get("Cookie", "")).get("__ac")
            logged_in = cookie is not None and cookie.value in state.sessions
            if not logged_in:
                return self._html("<h1>Please log in</h1><a href='/login_form'>Log in</a>")
            if path == "/dl/aa-4":
                return self._html(f"<p>Logged in as {state.username}</p><ul><li>filelist.txt</li></ul>")
            name = path.removeprefix("/dl/aa-4/")
            if name == "filelist.txt":
                text = state.filelist
                if text is None:
                    text = "".join(f"aa-4/{n} {len(data)}\n" for n, data in state.files.items())
                return self._send(200, text.encode(), {"Content-Type": "text/plain"})
            if name not in state.files:
                return self._html("<h1>Not found</h1><p>The requested file does not exist.</p>")
            self._file(state.files[name])

        def _record(self) -> None:
            state.requests.append(Request(self.command, urlsplit(self.path).path, self.headers.get("Range")))

        def _file(self, data: bytes) -> None:
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            start = int(match[1]) if match and state.honour_range else 0
            if start >= len(data) > 0:
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            headers = {"Content-Type": state.content_type, "Accept-Ranges": "bytes"}
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            if state.cuts:
                state.cuts -= 1
                self._send(206 if start else 200, body, headers, cut=len(body) // 2)
            else:
                self._send(206 if start else 200, body, headers)

        def _html(self, text: str, cookie: str | None = None) -> None:
            headers = {"Content-Type": "text/html; charset=utf-8"}
            if cookie:
                headers["Set-Cookie"] = f"__ac={cookie}; Path=/; HttpOnly"
            self._send(200, f"<html><body>{text}</body></html>".encode(), headers)

        def _send(self, status: int, body: bytes, headers: dict[str, str], cut: int | None = None) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if cut is None else body[:cut])
            if cut is not None:
                self.close_connection = True

    return Handler
