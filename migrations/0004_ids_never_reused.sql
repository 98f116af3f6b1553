-- Accounts, tenants and vhosts get ids that are never handed out again (AUTOINCREMENT): the
-- audit log scopes entries by these ids, and certificate files are named by vhost id, so a
-- new row must never inherit what a deleted one left. SQLite cannot add AUTOINCREMENT to a
-- table, so each is made again (the documented twelve steps: new table, copy, drop, rename,
-- indexes). Migrations run with foreign keys off and are checked after (`Store::open`), so
-- dropping a table does not cascade to the rows that refer to it.

CREATE TABLE users_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    username        TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'reseller', 'tenant')),
    password_hash   TEXT NOT NULL,
    totp_secret     TEXT,
    max_tenants     INTEGER,
    max_vhosts      INTEGER,
    max_php_workers INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
INSERT INTO users_new (id, username, role, password_hash, totp_secret, max_tenants, max_vhosts,
                       max_php_workers, created_at, updated_at)
    SELECT id, username, role, password_hash, totp_secret, max_tenants, max_vhosts,
           max_php_workers, created_at, updated_at FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;

CREATE TABLE tenants_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    owner_id      INTEGER NOT NULL REFERENCES users(id),
    plan_id       INTEGER NOT NULL REFERENCES plans(id),
    state         TEXT NOT NULL CHECK (state IN ('active', 'suspended')),
    uid           INTEGER NOT NULL UNIQUE,
    gid           INTEGER NOT NULL UNIQUE,
    php_settings  TEXT NOT NULL,
    generation    INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    search_text   TEXT NOT NULL DEFAULT ''
);
INSERT INTO tenants_new (id, name, owner_id, plan_id, state, uid, gid, php_settings, generation,
                         created_at, updated_at, search_text)
    SELECT id, name, owner_id, plan_id, state, uid, gid, php_settings, generation,
           created_at, updated_at, search_text FROM tenants;
DROP TABLE tenants;
ALTER TABLE tenants_new RENAME TO tenants;
CREATE INDEX tenants_by_owner ON tenants (owner_id, name);
CREATE INDEX tenants_by_plan ON tenants (plan_id);

CREATE TABLE vhosts_new (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
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
INSERT INTO vhosts_new (id, tenant_id, domain, docroot, php, front_controller, tls_mode,
                        tls_cert_pem, tls_key_pem, redirect_www, redirect_https, created_at,
                        updated_at)
    SELECT id, tenant_id, domain, docroot, php, front_controller, tls_mode, tls_cert_pem,
           tls_key_pem, redirect_www, redirect_https, created_at, updated_at FROM vhosts;
DROP TABLE vhosts;
ALTER TABLE vhosts_new RENAME TO vhosts;
CREATE INDEX vhosts_by_tenant ON vhosts (tenant_id, domain);

-- Ids deleted before this migration are not handed out either, as far as the audit log
-- remembers them.
DELETE FROM sqlite_sequence WHERE name IN ('users', 'tenants', 'vhosts');
INSERT INTO sqlite_sequence (name, seq) VALUES
    ('users', MAX(COALESCE((SELECT MAX(id) FROM users), 0),
                  COALESCE((SELECT MAX(scope_owner_id) FROM audit_log), 0))),
    ('tenants', MAX(COALESCE((SELECT MAX(id) FROM tenants), 0),
                    COALESCE((SELECT MAX(scope_tenant_id) FROM audit_log), 0))),
    ('vhosts', COALESCE((SELECT MAX(id) FROM vhosts), 0));

-- A TOTP code is accepted once: the time step of the last one used.
ALTER TABLE users ADD COLUMN totp_last_step INTEGER;
