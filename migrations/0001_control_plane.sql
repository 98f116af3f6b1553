-- The control plane: accounts, plans, tenants, vhosts, credentials, the audit log and the
-- desired-state generation. Times are Unix seconds (UTC).

-- One row: the desired-state generation. Every change bumps it; a tenant records the
-- generation of its last change, and the agent the generation it last applied.
CREATE TABLE state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  INTEGER NOT NULL
);
INSERT INTO state (id, generation) VALUES (1, 0);

CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'reseller', 'tenant')),
    password_hash   TEXT NOT NULL,
    totp_secret     TEXT,                  -- base32; NULL while the second factor is off
    max_tenants     INTEGER,               -- reseller limits; NULL means no limit
    max_vhosts      INTEGER,
    max_php_workers INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE plans (
    id                      INTEGER PRIMARY KEY,
    name                    TEXT NOT NULL UNIQUE,
    max_vhosts              INTEGER NOT NULL,
    php_pm                  TEXT NOT NULL CHECK (php_pm IN ('ondemand', 'dynamic', 'static')),
    php_max_children        INTEGER NOT NULL,
    php_max_requests        INTEGER NOT NULL,
    php_memory_limit_mb     INTEGER NOT NULL,
    php_upload_max_mb       INTEGER NOT NULL,
    php_max_execution_time  INTEGER NOT NULL,
    php_disable_functions   TEXT NOT NULL,  -- comma-separated, each a checked function name
    disk_mb                 INTEGER NOT NULL,
    memory_mb               INTEGER NOT NULL,
    cpu_percent             INTEGER NOT NULL,
    max_processes           INTEGER NOT NULL,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);

CREATE TABLE tenants (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    owner_id      INTEGER NOT NULL REFERENCES users(id),
    plan_id       INTEGER NOT NULL REFERENCES plans(id),
    state         TEXT NOT NULL CHECK (state IN ('active', 'suspended')),
    uid           INTEGER NOT NULL UNIQUE,
    gid           INTEGER NOT NULL UNIQUE,
    php_settings  TEXT NOT NULL,          -- JSON object of whitelisted, checked settings
    generation    INTEGER NOT NULL,       -- desired-state generation of its last change
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX tenants_by_owner ON tenants (owner_id, name);
CREATE INDEX tenants_by_plan ON tenants (plan_id);

-- A tenant login is a user with role 'tenant' bound to its tenant.
CREATE TABLE tenant_logins (
    user_id    INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    tenant_id  INTEGER NOT NULL UNIQUE REFERENCES tenants(id) ON DELETE CASCADE
);

-- Every UID ever handed out stays here, so a new tenant never inherits a deleted one's files.
CREATE TABLE uid_reservations (
    uid          INTEGER PRIMARY KEY,
    tenant_name  TEXT NOT NULL,
    released_at  INTEGER
);

-- Tenants deleted from the desired state, for the agent to tear down (pool, user, archive).
CREATE TABLE tenant_removals (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    uid         INTEGER NOT NULL,
    gid         INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    removed_at  INTEGER NOT NULL,
    done_at     INTEGER
);

-- What the agent last applied for a tenant.
CREATE TABLE tenant_applied (
    tenant_id   INTEGER PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    generation  INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('ok', 'pending', 'error')),
    error       TEXT,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE vhosts (
    id                INTEGER PRIMARY KEY,
    tenant_id         INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    domain            TEXT NOT NULL UNIQUE,
    docroot           TEXT NOT NULL,
    php               INTEGER NOT NULL CHECK (php IN (0, 1)),
    front_controller  TEXT,
    tls_mode          TEXT NOT NULL CHECK (tls_mode IN ('none', 'self-signed', 'custom')),
    tls_cert_pem      TEXT,
    tls_key_pem       TEXT,
    redirect_www      TEXT NOT NULL CHECK (redirect_www IN ('none', 'to-www', 'to-apex')),
    redirect_https    INTEGER NOT NULL CHECK (redirect_https IN (0, 1)),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX vhosts_by_tenant ON vhosts (tenant_id, domain);

-- Every host name a vhost answers to (its domain and its aliases): one owner per name,
-- across all tenants.
CREATE TABLE vhost_names (
    name      TEXT PRIMARY KEY,
    vhost_id  INTEGER NOT NULL REFERENCES vhosts(id) ON DELETE CASCADE,
    is_alias  INTEGER NOT NULL CHECK (is_alias IN (0, 1))
);
CREATE INDEX vhost_names_by_vhost ON vhost_names (vhost_id);

CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,          -- first characters, to recognise a token in lists
    token_hash    BLOB NOT NULL UNIQUE,   -- SHA-256 of the whole token
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id, id);

CREATE TABLE sessions (
    id_hash     BLOB PRIMARY KEY,         -- SHA-256 of the cookie value
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE audit_log (
    id              INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    target          TEXT NOT NULL,
    before          TEXT,                 -- JSON, secrets left out
    after           TEXT,
    source          TEXT NOT NULL,        -- client address, or 'cli'
    scope_owner_id  INTEGER,              -- the admin or reseller who owns the target
    scope_tenant_id INTEGER               -- the tenant the target belongs to
);
CREATE INDEX audit_by_actor ON audit_log (actor, id);
CREATE INDEX audit_by_target ON audit_log (target, id);
CREATE INDEX audit_by_owner ON audit_log (scope_owner_id, id);
CREATE INDEX audit_by_tenant ON audit_log (scope_tenant_id, id);
