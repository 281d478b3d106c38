"""The API's fixed paths, named once for the routes and for the middleware that treats some differently."""

from __future__ import annotations

CREATE_ROOM_PATH = "/api/livekit/create-room"
AGENTS_PATH = "/api/agents"
HEALTH_PATH = "/api/livekit/health"
WEBHOOK_PATH = "/api/livekit/webhook"
OPENAPI_PATH = "/api/openapi.json"
OPS_HISTORY_PATH = "/api/ops/history"
METRICS_PATH = "/metrics"
"""Prometheus' conventional path; outside /api, but behind the API key like it (auth.py)."""
