"""The admin API described as OpenAPI 3.1 (served at ``/api/v1/openapi.json``).

Kept true by a test that runs schemathesis against a running server: every
documented path, every documented status, and responses that match these
schemas (tests/integration/test_openapi.py).
"""

from __future__ import annotations

from typing import Any

from controlplane.proxy_rows import MAX_LIMIT
from controlplane.rollout.machine import Phase

OBJ: dict[str, Any] = {"type": "object"}
STR: dict[str, Any] = {"type": "string"}
NUM: dict[str, Any] = {"type": "number"}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": STR}}
ACTIONS = ("promote", "abort", "pause", "resume")


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str, media: str = "text/plain") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": STR}}}


NAME = {"name": "name", "in": "path", "required": True, "schema": STR}
READ_DENIED = {"401": _json(ERROR, "a read token is required (--api-read-token-file)")}

SERVICE = {"type": "object", "required": ["name", "weights", "declaredWeights", "weightsSetBy",
                                         "envoy", "spec"],
           "properties": {"name": STR, "weights": {"type": "object",
                                                   "additionalProperties": NUM},
                          "declaredWeights": {"type": "object", "additionalProperties": NUM},
                          "weightsSetBy": STR, "document": {"type": ["object", "null"]},
                          "envoy": OBJ, "spec": OBJ}}
SERVICES = {"type": "object", "required": ["revision", "snapshot", "services", "documents",
                                          "sources"],
            "properties": {"revision": {"type": "integer"}, "snapshot": STR,
                           "services": {"type": "array", "items": SERVICE},
                           "documents": {"type": "array", "items": OBJ},
                           "sources": {"type": "array", "items": OBJ}}}
PROXIES = {"type": "object", "required": ["proxies", "total"],
           "properties": {"total": {"type": "integer", "minimum": 0},
                          "proxies": {"type": "array", "items": {
               "type": "object", "required": ["id", "variant", "synced", "types"],
               "properties": {"id": STR, "variant": {"enum": ["sotw", "delta"]},
                              "stream": {"type": "integer"},
                              "worker": {"type": "integer", "minimum": 0},
                              "synced": {"type": "boolean"},
                              "types": {"type": "array", "items": OBJ}}}}}}
EXPERIMENT = {"type": "object", "required": ["name", "strategy", "phase", "step", "steps",
                                            "weights", "reason", "run"],
              "properties": {"name": STR, "service": {"type": ["string", "null"]},
                             "strategy": STR, "phase": {"enum": [p.value for p in Phase]},
                             "step": {"type": "integer", "minimum": 0},
                             "steps": {"type": "array", "items": NUM},
                             "weights": {"type": "object", "additionalProperties": NUM},
                             "reason": STR, "run": STR,
                             "judgment": {"type": ["object", "null"]},
                             "eta": {"type": ["object", "null"]},
                             "decisions": {"type": "array", "items": OBJ}}}
ACTION_RESULT = {"type": "object", "required": ["message"],
                 "properties": {"message": STR,
                                "experiment": {"type": ["object", "null"]}}}


def _action(verb: str) -> dict[str, Any]:
    return {"post": {
        "summary": f"{verb} the experiment's current run",
        "parameters": [NAME],
        "security": [{"bearer": []}],
        "responses": {
            "200": _json(ACTION_RESULT, "done"),
            "401": _json(ERROR, "no valid write token"),
            "403": _json(ERROR, "mutations are disabled (no --api-token-file)"),
            "404": _json(ACTION_RESULT, "no such experiment"),
            "409": _json(ACTION_RESULT, "not possible in the run's phase"),
        }}}


def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "liveness", "responses": {"200": _text("alive")}}},
        "/readyz": {"get": {"summary": "readiness: every source loaded once",
                            "responses": {"200": _text("ready"), "503": _text("not yet")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
            "200": _text("exposition format"), **READ_DENIED}}},
        "/api/v1/services": {"get": {"summary": "services: declared and effective weights",
                                     "responses": {"200": _json(SERVICES), **READ_DENIED}}},
        "/api/v1/services/{name}/consistency": {"get": {
            "summary": "per proxy and pod: the version each serves",
            "parameters": [NAME],
            "responses": {"200": _json({"type": "object", "required": [
                "service", "consistent", "mismatches", "proxies", "pods"]}),
                "404": _json(ERROR, "no such service"), **READ_DENIED}}},
        "/api/v1/proxies": {"get": {
            "summary": "connected proxies and their sync state (total: every match)",
            "parameters": [
                {"name": "node", "in": "query", "required": False, "explode": True,
                 "schema": {"type": "array", "items": STR}},
                {"name": "cluster", "in": "query", "required": False, "schema": STR},
                {"name": "synced", "in": "query", "required": False,
                 "schema": {"type": "boolean"}},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}}],
            "responses": {"200": _json(PROXIES), "400": _json(ERROR, "bad query parameter"),
                          **READ_DENIED}}},
        "/api/v1/experiments": {"get": {"summary": "every experiment's run", "responses": {
            "200": _json({"type": "object", "required": ["experiments"],
                          "properties": {"experiments": {"type": "array",
                                                         "items": EXPERIMENT}}}),
            **READ_DENIED}}},
        "/api/v1/experiments/{name}": {"get": {
            "summary": "one run: evidence, ETA, every decision", "parameters": [NAME],
            "responses": {"200": _json(EXPERIMENT), "404": _json(ERROR, "no such experiment"),
                          **READ_DENIED}}},
        "/api/v1/experiments/{name}/looks": {"get": {
            "summary": "the run's looks with their evidence", "parameters": [NAME],
            "responses": {"200": _json({"type": "object", "required": ["name", "run",
                                                                       "looks"]}),
                          "404": _json(ERROR, "no such experiment"), **READ_DENIED}}},
        "/api/v1/experiments/{name}/samples.jsonl": {"get": {
            "summary": "the run's windows as sluice replay input", "parameters": [NAME],
            "responses": {"200": _text("JSON lines", "application/x-ndjson"),
                          "404": _json(ERROR, "no such experiment"), **READ_DENIED}}},
        "/api/v1/audit": {"get": {
            "summary": "who tried which mutation, when, and what came of it",
            "parameters": [{"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            "responses": {"200": _json({"type": "object", "required": ["entries"]}),
                          "400": _json(ERROR, "bad limit"), **READ_DENIED}}},
    }
    for verb in ACTIONS:
        paths[f"/api/v1/experiments/{{name}}/{verb}"] = _action(verb)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sluice admin API", "version": "v1"},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
