#!/usr/bin/env python3
"""A small HTTP backend: python3 app.py PORT NAME [DELAY_MS]

Answers every GET with 200 and its NAME after DELAY_MS (default 20) of
"work", over HTTP/1.1 keep-alive, one thread per connection. With
$REQUEST_LOG set, it appends the wall-clock time of each request it
receives to that file (matrix.sh reads when the balancer stopped sending). It does
nothing special on SIGTERM: the default action ends it at once, the way
most apps that were never taught to drain behave. Whether requests fail
when it is stopped is then up to what runs in front of it.
"""
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if LOG is not None:
            LOG.write(f"{time.time():.3f}\n")
        time.sleep(DELAY)
        body = (NAME + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    PORT = int(sys.argv[1])
    NAME = sys.argv[2]
    DELAY = (int(sys.argv[3]) if len(sys.argv) > 3 else 20) / 1000.0
    LOG = open(os.environ["REQUEST_LOG"], "a", buffering=1) if os.environ.get("REQUEST_LOG") else None
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    print(f"{NAME} listening on 127.0.0.1:{PORT}", flush=True)
    server.serve_forever()
