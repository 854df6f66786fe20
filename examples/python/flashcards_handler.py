"""Seed 003's flashcards Lambda, on ifmatch: an AWS Lambda handler behind an
API Gateway HTTP API (payload format 2.0).

Each user's Anki collection is a tenant database in the store, opened
through a cache on the Lambda's /tmp: a warm read downloads nothing and
uploads nothing, and a write uploads only the pages it changed, with one
conditional write, so concurrent invocations never lose each other's
changes (the seed's design lost them). Users are ifmatch accounts, each
collection keyed by the account's immutable id (a deleted and re-registered
username never sees the old collection); logins are throttled after repeated
failures (429 with Retry-After); adding a note is one idempotent commit per request id, so API Gateway's or a
client's retry never adds it twice.

Routes (HTTP Basic credentials on all but registration):

    POST /register     {"username", "name", "password"}      -> 201 {"username"}
    POST /notes        {"front", "back"}                     -> 201 {"id"}
    GET  /notes                                              -> 200 {"notes": [...]}
    POST /reviews      {"note_id", "ease"}                   -> 200 {"reviews"}

Configuration: IFMATCH_STORE (e.g. s3://bucket/flashcards, default a local
file store) and IFMATCH_CACHE_DIR (default /tmp/ifmatch-cache).
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import ifmatch

_state: dict[str, Any] = {}


def _services() -> tuple[ifmatch.Store, ifmatch.Accounts, ifmatch.TenantDbs]:
    """Opened once per Lambda container and reused by every invocation."""
    if not _state:
        store = ifmatch.open(os.environ.get("IFMATCH_STORE", "file:///tmp/ifmatch-data"))
        cheap = os.environ.get("FLASHCARDS_HASH_PARAMS")  # tests only: cheaper argon2id
        m, t, p = (int(x) for x in cheap.split(",")) if cheap else (0, 0, 0)
        _state["store"] = store
        _state["accounts"] = ifmatch.Accounts(store, hash_params=(m, t, p) if cheap else None)
        _state["dbs"] = ifmatch.TenantDbs(
            store, os.environ.get("IFMATCH_CACHE_DIR", "/tmp/ifmatch-cache"), schema=ifmatch.ANKI_SCHEMA
        )
    return _state["store"], _state["accounts"], _state["dbs"]


def _response(status: int, body: Any) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


def _body(event: dict[str, Any]) -> dict[str, Any]:
    raw = event.get("body") or "{}"
    if event.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    parsed = json.loads(raw)
    if not isinstance(parsed, dict):
        raise ValueError("the request body must be a JSON object")
    return parsed


def _user(event: dict[str, Any], accounts: ifmatch.Accounts) -> ifmatch.User:
    header = (event.get("headers") or {}).get("authorization", "")
    if not header.startswith("Basic "):
        raise ifmatch.InvalidCredentialsError("missing credentials")
    username, _, password = base64.b64decode(header[6:]).decode().partition(":")
    client = event.get("requestContext", {}).get("http", {}).get("sourceIp")
    return accounts.login(username, password, client=client)


def _add_note(tx: ifmatch.Tx, front: str, back: str) -> int:
    now = int(time.time())
    tx.execute(
        "INSERT INTO notes (guid, mid, mod, usn, tags, flds, sfld, csum, flags, data)"
        " VALUES (lower(hex(randomblob(8))), 1, ?, -1, '', ?, ?, 0, 0, '')",
        (now, f"{front}\x1f{back}", front),
    )
    note_id = tx.lastrowid
    tx.execute(
        "INSERT INTO cards (nid, did, ord, mod, usn, type, queue, due, ivl, factor, reps, lapses,"
        " left, odue, odid, flags, data) VALUES (?, 1, 0, ?, -1, 0, 0, ?, 0, 2500, 0, 0, 0, 0, 0, 0, '')",
        (note_id, now, note_id),
    )
    return note_id


def _review(tx: ifmatch.Tx, note_id: int, ease: int) -> int:
    cards = tx.query("SELECT id, ivl, factor FROM cards WHERE nid = ?", (note_id,))
    if not cards:
        raise LookupError(f"no note {note_id}")
    card_id, ivl, factor = cards[0]
    new_ivl = 1 if ease == 1 else max(1, ivl) * (2 if ease < 4 else 3)
    tx.execute("UPDATE cards SET ivl = ?, reps = reps + 1, mod = ? WHERE id = ?", (new_ivl, int(time.time()), card_id))
    tx.execute(
        "INSERT INTO revlog (id, cid, usn, ease, ivl, lastIvl, factor, time, type) VALUES (NULL, ?, -1, ?, ?, ?, ?, 0, 1)",
        (card_id, ease, new_ivl, ivl, factor),
    )
    return int(tx.query("SELECT count(*) FROM revlog WHERE cid = ?", (card_id,))[0][0])


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point."""
    _, accounts, dbs = _services()
    route = event.get("routeKey") or f"{event['requestContext']['http']['method']} {event['rawPath']}"
    try:
        if route == "POST /register":
            body = _body(event)
            user = accounts.create(body["username"], body.get("name", ""), body["password"])
            return _response(201, {"username": user.username})
        user = _user(event, accounts)
        tenant = user.id
        if route == "GET /notes":
            rows = dbs.read(tenant, lambda tx: tx.query("SELECT id, flds FROM notes ORDER BY id"))
            notes = [{"id": i, "front": f.split("\x1f")[0], "back": f.split("\x1f")[1]} for i, f in rows]
            return _response(200, {"notes": notes})
        if route == "POST /notes":
            body = _body(event)
            request_id = event["requestContext"]["requestId"]
            note_id = dbs.write(
                tenant, lambda tx: _add_note(tx, body["front"], body["back"]), commit_id=f"add-note/{request_id}"
            )
            return _response(201, {"id": note_id})
        if route == "POST /reviews":
            body = _body(event)
            reviews = dbs.write(tenant, lambda tx: _review(tx, int(body["note_id"]), int(body["ease"])))
            return _response(200, {"reviews": reviews})
        return _response(404, {"error": "not_found", "message": f"no route {route}"})
    except ifmatch.NotFoundError:
        return _response(200, {"notes": []}) if route == "GET /notes" else _response(404, {"error": "not_found"})
    except ifmatch.InvalidCredentialsError:
        return _response(401, {"error": "unauthorized"})
    except ifmatch.TooManyRequestsError as e:
        response = _response(429, {"error": "too_many_requests", "message": str(e)})
        response["headers"]["retry-after"] = str(max(1, round(e.retry_after)))
        return response
    except ifmatch.UserExistsError:
        return _response(409, {"error": "user_exists"})
    except (ifmatch.InvalidInputError, KeyError, ValueError) as e:
        return _response(400, {"error": "bad_request", "message": str(e)})
    except LookupError as e:
        return _response(404, {"error": "not_found", "message": str(e)})
