-- A tenant's name and every host name of its vhosts in one column, so that searching tenants
-- by name or domain reads one row per tenant instead of joining every vhost name.
ALTER TABLE tenants ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
UPDATE tenants SET search_text = name || ' ' || COALESCE(
    (SELECT group_concat(n.name, ' ') FROM vhosts v JOIN vhost_names n ON n.vhost_id = v.id
     WHERE v.tenant_id = tenants.id), '');
