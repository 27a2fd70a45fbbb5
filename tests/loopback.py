"""Servers on 127.0.0.1 for the tests of code that downloads: a port that refuses, and a threaded server."""
from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from http.server import ThreadingHTTPServer


def closed_port_url() -> str:
    """'http://127.0.0.1:PORT' where nothing listens, so a request is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextmanager
def loopback_server(handler):
    """Serve `handler` (a BaseHTTPRequestHandler class) on 127.0.0.1 in a thread; yields its URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
