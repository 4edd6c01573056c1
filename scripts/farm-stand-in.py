#!/usr/bin/env python3
"""A stand-in for the farm's pods, for scripts/check-manifests and scripts/check-image: answers
`/health` with 200, and every other request with 200 and a body naming this stand-in; a request
without the ASP.NET Core session cookie (the overlays' preset) gets one issued, so that the proxy
learns a session (and, with the Redis store, writes it to Redis).

    farm-stand-in.py HOST PORT     (HOST may be an IPv6 address such as ::1)

Runs until killed.
"""

import secrets
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COOKIE = ".AspNetCore.Session"


class Farm(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"farm stand-in\n"
        self.send_response(200)
        if self.path != "/health" and COOKIE + "=" not in self.headers.get("Cookie", ""):
            self.send_header("Set-Cookie", f"{COOKIE}={secrets.token_hex(16)}; Path=/; HttpOnly")
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *_):
        pass


def main():
    host, port = sys.argv[1], int(sys.argv[2])

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    Server((host, port), Farm).serve_forever()


if __name__ == "__main__":
    main()
