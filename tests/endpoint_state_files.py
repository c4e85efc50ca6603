"""Endpoint state files as earlier releases wrote them, for upgrade tests."""

from __future__ import annotations

# The endpoint state as the first release wrote it: before pending_releases, release and
# pid_started_at. One endpoint 'bc' at blue 100 % and one traffic change recorded.
FIRST_RELEASE_ENDPOINT_STATE = """
CREATE TABLE endpoints (
    name TEXT PRIMARY KEY, port INTEGER NOT NULL, pid INTEGER, scoring_key TEXT NOT NULL,
    admin_token TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '{}', weights TEXT NOT NULL DEFAULT '{}',
    mirror TEXT NOT NULL DEFAULT '{}', tracking_uri TEXT NOT NULL, registry_uri TEXT
);
CREATE TABLE deployments (
    endpoint TEXT NOT NULL REFERENCES endpoints(name) ON DELETE CASCADE, name TEXT NOT NULL,
    model_name TEXT NOT NULL, model_version TEXT NOT NULL, status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '', PRIMARY KEY (endpoint, name)
);
CREATE TABLE traffic_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, endpoint TEXT NOT NULL, weights TEXT NOT NULL,
    mirror TEXT NOT NULL, replaced_at TEXT NOT NULL DEFAULT (datetime('now'))
);
INSERT INTO endpoints VALUES ('bc', 8000, NULL, 'key-1', 'token-1', '', '{}',
    '{"blue": 100}', '{}', 'file:///mlruns', NULL);
INSERT INTO traffic_history (endpoint, weights, mirror) VALUES ('bc', '{"green": 100}', '{}');
"""
