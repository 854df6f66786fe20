"""moto's server, answering one request at a time.

moto 5.2.5 checks S3's If-Match / If-None-Match and then writes in a separate
step, without a lock; on its default threaded server two conditional PUTs on
one version occasionally both succeed (measured here: about 1 round in 300 of
16 concurrent PUTs, and a lost increment in most runs of the 8 x 50 race), and
its DynamoDB conditional updates lost updates the same way (398/400). Real S3
and DynamoDB decide each conditional write atomically. Serving one request at a
time restores that atomicity without changing any request or answer, so the
tests check our code, not moto's locking.

Usage: python moto_server_serial.py HOST PORT
"""

import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
