"""Schemathesis hooks for running it against `rookery serve` (see schemathesis.toml next to this file).

OpenAPI states each parameter's rule on its own; it cannot state a rule between parameters, or one
that depends on what the server holds. The hooks keep the requests Schemathesis generates as valid
inside the four such rules of Rookery's contract, which the document states in words, work around one
Schemathesis bug, and accept the one answer where API.md and Schemathesis disagree. Requests generated
to be invalid are left alone.
"""

import uuid

import requests
import schemathesis
from schemathesis import GenerationMode

PUT_ITEM = "PUT /v1/items/{collection}/{id}"
SEARCH = "GET /v1/search"


def breaks_a_header_schema(case):
    """True when a header value does not match its own schema.

    The coverage phase seeds an optional header whose pattern needs a character other than a letter
    or digit (`If-Match: "3"`) with a negative value (`0`) and still labels the case positive, so the
    server's rightful `400` would be reported as "schema-valid request rejected".
    """
    validator_cls = case.operation.schema.adapter.jsonschema_validator_cls
    headers = case.headers or {}
    return any(
        parameter.name in headers and not parameter.admits(headers[parameter.name], validator_cls)
        for parameter in case.operation.headers
    )


@schemathesis.hook
def filter_case(context, case):
    """Keep a case generated as valid only if it is valid under the rules OpenAPI cannot state."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return True
    if breaks_a_header_schema(case):
        return False
    label = case.operation.label
    headers = case.headers or {}
    if label == PUT_ITEM and "If-Match" in headers and "If-None-Match" in headers:
        # Both preconditions at once are `400`: send either, not both (API-NOTES.md).
        return False
    if label == SEARCH and "cursor" in (case.query or {}):
        # A search cursor is the index's own: a client only sends back a `next_cursor` it was given.
        return False
    return True


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep every failure but one that API.md contradicts.

    After `DELETE /v1/items/{collection}/{id}` the item's history stays readable, and so do its
    earlier versions (`?version=N`): API.md promises both. Schemathesis expects any read under a
    deleted path to be `404`.
    """
    if failure.code != "ST301":
        return True
    label = case.operation.label
    history = label == "GET /v1/items/{collection}/{id}/history"
    time_travel = label == "GET /v1/items/{collection}/{id}" and "version" in (case.query or {})
    return not (history or time_travel)


def _single_use(headers):
    """`headers` with its `Idempotency-Key`, if any, made unique by a fresh suffix."""
    key = headers.get("Idempotency-Key")
    if isinstance(key, str):
        headers["Idempotency-Key"] = f"{key[:111]}~{uuid.uuid4().hex[:16]}"
    return headers


def _positive(case):
    return case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE


@schemathesis.hook
def map_case(context, case):
    """Make each valid `Idempotency-Key` single-use.

    A key names one request: reused with another method, path or body it is `422` (API.md), which
    is right but says nothing about the request's shape. Generated keys are short and repeat across
    operations, so a fresh suffix keeps each one bound to the request it was generated for.
    """
    if _positive(case) and case.headers:
        _single_use(case.headers)
    return case


@schemathesis.hook
def before_call(context, case, kwargs):
    """The same for the steps of stateful scenarios, which do not all pass through `map_case`: a
    step that repeated an earlier step's key with another body was answered `422`, as it should be."""
    phase = case.meta.phase.name if case.meta is not None else None
    if phase == "stateful" and _positive(case) and case.headers:
        _single_use(case.headers)


@schemathesis.hook("after_call").apply_to(name="PUT /v1/devices/{device_id}")
def stay_under_the_device_quota(context, case, response):
    """A user may register at most 20 devices, and a 21st is `400`: past 10, remove the others, so
    that every generated registration is tried against an account with room for it."""
    if response.status_code != 200:
        return
    base = case.operation.base_url.rstrip("/")
    auth = {"Authorization": response.request.headers.get("Authorization", "")}
    listed = requests.get(f"{base}/v1/devices", headers=auth, timeout=10)
    devices = listed.json().get("devices", []) if listed.ok else []
    if len(devices) < 10:
        return
    kept = (case.path_parameters or {}).get("device_id")
    for device in devices:
        if device["device_id"] != kept:
            requests.delete(f"{base}/v1/devices/{device['device_id']}", headers=auth, timeout=10)
