-- What the agent last saw of each tenant's PHP-FPM pool (ping, status page, cgroup usage),
-- and samples of the last hour for the dashboard's chart. Written by the agent only.
CREATE TABLE tenant_health (
    tenant_id             INTEGER PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    checked_at            INTEGER NOT NULL,
    ok                    INTEGER NOT NULL CHECK (ok IN (0, 1)),
    error                 TEXT,
    ping_ms               REAL,
    active_processes      INTEGER,
    idle_processes        INTEGER,
    total_processes       INTEGER,
    listen_queue          INTEGER,
    max_children_reached  INTEGER,
    slow_requests         INTEGER,
    accepted_conn         INTEGER,
    restarts              INTEGER NOT NULL DEFAULT 0,
    memory_bytes          INTEGER,
    processes             INTEGER,
    cpu_usec              INTEGER
);

CREATE TABLE tenant_health_samples (
    tenant_id         INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    at                INTEGER NOT NULL,
    active_processes  INTEGER,
    total_processes   INTEGER,
    listen_queue      INTEGER,
    memory_bytes      INTEGER,
    PRIMARY KEY (tenant_id, at)
);
