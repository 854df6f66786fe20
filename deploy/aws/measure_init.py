#!/usr/bin/env python3
"""Cold-starts the Lambda bootstrap against a local Lambda Runtime API and
measures its init time; then sends it API Gateway v2 events and checks the
answers and the EMF metric lines.

Init time is what Lambda reports as "Init Duration": from the process start to
its first `GET /2018-06-01/runtime/invocation/next`, i.e. opening the store,
fetching the operator key and setting up the router. The Runtime API here is
the documented protocol (next / response / error), on 127.0.0.1 only.

Usage: measure_init.py BOOTSTRAP --runs N [--env K=V ...]
Prints one JSON object: init times in ms (each run, min, median, max), and the
smoke test's statuses. Exits non-zero if a run fails or an answer is wrong.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY_HEADER = "authorization"


EVENT_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "api-gateway-v2-event.json")


def api_gateway_event(method, path, headers, body=None):
    """An API Gateway HTTP API (payload 2.0) event: the shared fixture
    (also read by crates/ifmatch-server/tests/lambda.rs) with this request."""
    with open(EVENT_FIXTURE) as f:
        event = json.load(f)
    event["rawPath"] = path
    event["headers"] = headers
    event["body"] = body
    ctx = event["requestContext"]
    ctx["http"]["method"] = method
    ctx["http"]["path"] = path
    ctx["requestId"] = str(uuid.uuid4())
    ctx["timeEpoch"] = int(time.time() * 1000)
    return event


class Runtime:
    """One cold start: hands out `events`, collects the answers."""

    def __init__(self, events):
        self.events = list(events)
        self.answers = []
        self.first_next = None
        self.errors = []
        self.done = threading.Event()
        self.lock = threading.Lock()


def handler_for(rt):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if not self.path.endswith("/runtime/invocation/next"):
                self.send_error(404)
                return
            with self.lock_and_first():
                event = rt.events.pop(0) if rt.events else None
            if event is None:
                rt.done.set()
                # Park the runtime: the measurement is over and the process is killed.
                time.sleep(30)
                return
            body = json.dumps(event).encode()
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", event["requestContext"]["requestId"])
            self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                             "arn:aws:lambda:us-east-1:123456789012:function:ifmatch")
            self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def lock_and_first(self):
            if rt.first_next is None:
                rt.first_next = time.monotonic()
            return rt.lock

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if self.path.endswith("/response"):
                rt.answers.append(json.loads(body))
            else:
                rt.errors.append((self.path, body.decode(errors="replace")))
                if "/init/error" in self.path:
                    rt.done.set()
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


def cold_start(bootstrap, env, events):
    rt = Runtime(events)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(rt))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    child_env = dict(os.environ)
    # What Lambda sets for every function (the runtime client refuses to start without them).
    child_env.update({
        "AWS_LAMBDA_FUNCTION_NAME": "ifmatch",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/ifmatch",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local",
    })
    child_env.update(env)
    child_env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{port}"
    started = time.monotonic()
    proc = subprocess.Popen([bootstrap], env=child_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    # Wait for the runtime to finish, or for the process to die first.
    deadline = started + 60
    finished = False
    while time.monotonic() < deadline and not finished and proc.poll() is None:
        finished = rt.done.wait(timeout=0.05)
    proc.kill()
    out, err = proc.communicate()
    server.shutdown()
    if not finished or rt.errors or rt.first_next is None:
        sys.stderr.write(err.decode(errors="replace"))
        raise SystemExit(f"cold start failed: errors={rt.errors}")
    return (rt.first_next - started) * 1000.0, rt.answers, out.decode(), err.decode()


def json_or_none(line):
    """The JSON document on a line of output, or None for any other line."""
    try:
        return json.loads(line)
    except ValueError:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--key", required=True, help="the operator key the function should accept")
    ap.add_argument("--env", action="append", default=[], help="K=V for the function")
    args = ap.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    auth = {KEY_HEADER: f"Bearer {args.key}"}

    inits = []
    for _ in range(args.runs):
        ms, _, _, _ = cold_start(args.bootstrap, env, [])
        inits.append(round(ms, 1))

    key = f"measure/{uuid.uuid4()}.json"
    events = [
        api_gateway_event("PUT", f"/v1/objects/{key}",
                          {**auth, "if-none-match": "*", "content-type": "application/json"},
                          '{"n":1}'),
        api_gateway_event("PUT", f"/v1/objects/{key}",
                          {**auth, "if-none-match": "*", "content-type": "application/json"},
                          '{"n":2}'),
        api_gateway_event("GET", f"/v1/objects/{key}", auth),
        api_gateway_event("GET", f"/v1/objects/{key}", {}),
    ]
    _, answers, stdout, stderr = cold_start(args.bootstrap, env, events)
    statuses = [a.get("statusCode") for a in answers]
    emf = [doc for doc in map(json_or_none, stdout.splitlines())
           if isinstance(doc, dict) and "_aws" in doc]
    report = {
        "init_ms": inits,
        "init_ms_min": min(inits),
        "init_ms_median": statistics.median(inits),
        "init_ms_max": max(inits),
        "smoke_statuses": statuses,
        "emf_documents": len(emf),
        # What CloudWatch Logs ingests from the function per request (EMF and
        # log lines, the cold start's lines spread over the requests), without
        # Lambda's own START/END/REPORT lines.
        "log_bytes_per_request": round((len(stdout) + len(stderr)) / len(events)),
    }
    print(json.dumps(report))
    if statuses != [201, 412, 200, 401]:
        raise SystemExit(f"unexpected statuses {statuses}")
    if len(emf) < len(events):
        raise SystemExit(f"expected an EMF line per invocation, got {len(emf)}:\n{stdout}")


if __name__ == "__main__":
    main()
