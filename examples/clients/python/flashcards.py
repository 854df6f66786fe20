#!/usr/bin/env python3
"""Flashcard notes through /v1/db (seed 003), with the standard library only.

Each user has their own SQLite database inside the store. The server runs
every batch as one transaction and, when two devices commit at once, re-runs
the loser's batch on the winner's state: no review is lost. At the end the
user downloads their whole database and opens it with Python's sqlite3.

Environment: IFMATCH_URL (e.g. http://127.0.0.1:8080) and IFMATCH_TOKEN
(the operator key, used only to register the user).
"""

import json
import os
import secrets
import sqlite3
import tempfile
import threading
import urllib.error
import urllib.request

BASE = os.environ["IFMATCH_URL"].rstrip("/")
OPERATOR = os.environ["IFMATCH_TOKEN"]


def call(method, path, token=None, body=None, raw=False):
    """Sends a request; returns (status, parsed JSON or raw bytes)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as e:  # 4xx/5xx: the body is a JSON error
        status, payload = e.code, e.read()
    if raw or not payload:
        return status, payload
    return status, json.loads(payload)


def sql(token, *statements):
    """Runs statements [(sql, params), ...] as one transaction on the user's database."""
    batch = {"statements": [{"sql": s, "params": p} for s, p in statements]}
    status, body = call("POST", "/v1/db", token, batch)
    assert status == 200, (status, body)
    return body["results"]


def main():
    # The operator registers a user; the user logs in and uses their own database.
    user, password = "learner-" + secrets.token_hex(4), secrets.token_urlsafe(12)
    status, body = call("POST", "/v1/users", OPERATOR, {"username": user, "password": password})
    assert status == 201, (status, body)
    status, body = call("POST", "/v1/sessions", body={"username": user, "password": password})
    assert status == 201, (status, body)
    token = body["token"]

    sql(token,
        ("CREATE TABLE notes(id INTEGER PRIMARY KEY, front TEXT, back TEXT, reviews INTEGER DEFAULT 0)", []),
        ("INSERT INTO notes(front, back) VALUES (?, ?), (?, ?)", ["bonjour", "hello", "merci", "thank you"]))

    # Two devices review the same card at the same moment, ten times each.
    def device():
        for _ in range(10):
            sql(token, ("UPDATE notes SET reviews = reviews + 1 WHERE front = ?", ["bonjour"]))

    threads = [threading.Thread(target=device) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    [result] = sql(token, ("SELECT front, reviews FROM notes ORDER BY id", []))
    assert result["rows"] == [["bonjour", 20], ["merci", 0]], result
    print("20 concurrent reviews from two devices, none lost:", result["rows"])

    # A statement that fails changes nothing (the whole batch is one transaction).
    status, err = call("POST", "/v1/db", token, {"statements": [
        {"sql": "UPDATE notes SET reviews = 0", "params": []},
        {"sql": "INSERT INTO nowhere VALUES (1)", "params": []}]})
    assert status == 400 and err["error"] == "sql_error", (status, err)

    # The user's whole database, as a SQLite file.
    status, info = call("GET", "/v1/db/info", token)
    assert status == 200, (status, info)
    status, data = call("GET", "/v1/db/export", token, raw=True)
    assert status == 200 and data.startswith(b"SQLite format 3\0"), status
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "notes.sqlite3")
        with open(path, "wb") as f:
            f.write(data)
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT front, back, reviews FROM notes ORDER BY id").fetchall()
        db.close()
    assert rows == [("bonjour", "hello", 20), ("merci", "thank you", 0)], rows
    print(f"exported {len(data)} bytes (commit {info['seq']}); sqlite3 reads:", rows)


if __name__ == "__main__":
    main()
