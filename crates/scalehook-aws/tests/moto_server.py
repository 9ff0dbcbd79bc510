"""moto's server with one request at a time.

`moto_server` serves requests on parallel threads, and moto's DynamoDB backend is not
thread-safe: two concurrent `UpdateItem ... ADD` requests can lose one of the increments,
which real DynamoDB never does (each request is atomic). Holding a lock per request
restores that per-request atomicity; requests from concurrent clients still interleave
freely between one another, which is what the ledger's condition expressions must handle.

It also exits when its stdin closes, so a test process that dies without cleaning up
(SIGKILL, abort) leaves no server behind.

Usage: python moto_server.py HOST PORT
"""
import os
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


class OneAtATime:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            return list(self.app(environ, start_response))


def exit_when_stdin_closes():
    sys.stdin.buffer.read()
    os._exit(0)


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, OneAtATime(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
