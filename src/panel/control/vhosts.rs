//! Vhosts: the sites a tenant serves, each a domain with aliases, a document root under the
//! tenant's home, PHP on or off, TLS and redirects.

use super::{on_unique, Control, ControlError, Page, PageRequest};
use crate::domain::{
    Checks, DocRoot, DomainName, FieldError, FrontController, RedirectWww, TlsMode, TlsPem,
};
use crate::panel::policy::Actor;
use crate::store::rows::{TenantRow, VhostRow};
use crate::store::{bump_generation, now, AuditEntry};
use serde::Deserialize;

/// At most this many aliases per vhost.
pub const MAX_ALIASES: usize = 32;

/// A vhost as sent to create or change one. On a change, a missing field keeps its value;
/// an empty `front_controller` removes it.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct VhostInput {
    pub domain: Option<String>,
    pub aliases: Option<Vec<String>>,
    pub docroot: Option<String>,
    pub php: Option<bool>,
    pub front_controller: Option<String>,
    pub tls_mode: Option<String>,
    pub tls_certificate: Option<String>,
    pub tls_key: Option<String>,
    pub redirect_www: Option<String>,
    pub redirect_https: Option<bool>,
}

/// A vhost's settings, checked.
#[derive(Debug, Clone)]
struct VhostValues {
    aliases: Vec<DomainName>,
    docroot: DocRoot,
    php: bool,
    front_controller: Option<FrontController>,
    tls_mode: TlsMode,
    tls_certificate: Option<TlsPem>,
    tls_key: Option<TlsPem>,
    /// The stored key stays (an update that uploads no new key).
    keep_key: bool,
    redirect_www: RedirectWww,
    redirect_https: bool,
}

impl VhostValues {
    fn defaults(domain: &DomainName) -> Self {
        Self {
            aliases: Vec::new(),
            docroot: DocRoot::default_for(domain),
            php: true,
            front_controller: None,
            tls_mode: TlsMode::None,
            tls_certificate: None,
            tls_key: None,
            keep_key: false,
            redirect_www: RedirectWww::None,
            redirect_https: false,
        }
    }

    /// Applies the given fields on top of `self`, recording every malformed one in `checks`
    /// and every name given twice in `refusals` (a name already served, as by another vhost).
    fn apply(
        &mut self,
        input: &VhostInput,
        domain: Option<&DomainName>,
        checks: &mut Checks,
        refusals: &mut Vec<FieldError>,
    ) {
        if let Some(aliases) = &input.aliases {
            if aliases.len() > MAX_ALIASES {
                checks.push(FieldError::new(
                    "aliases",
                    format!("at most {MAX_ALIASES} aliases"),
                ));
            } else {
                let mut parsed: Vec<DomainName> = Vec::new();
                for (i, raw) in aliases.iter().enumerate() {
                    let field = format!("aliases[{i}]");
                    if let Some(alias) = checks.take(&field, DomainName::parse(raw)) {
                        if Some(&alias) == domain || parsed.contains(&alias) {
                            refusals
                                .push(FieldError::new(field, format!("'{alias}' is listed twice")));
                        } else {
                            parsed.push(alias);
                        }
                    }
                }
                self.aliases = parsed;
            }
        }
        if let Some(d) = &input.docroot {
            if let Some(d) = checks.take("docroot", DocRoot::parse(d)) {
                self.docroot = d;
            }
        }
        if let Some(php) = input.php {
            self.php = php;
        }
        if let Some(fc) = &input.front_controller {
            self.front_controller = if fc.is_empty() {
                None
            } else {
                checks.take("front_controller", FrontController::parse(fc))
            };
        }
        if let Some(mode) = &input.tls_mode {
            if let Some(mode) = checks.take("tls_mode", TlsMode::parse(mode)) {
                self.tls_mode = mode;
            }
        }
        if let Some(cert) = input.tls_certificate.as_deref().filter(|c| !c.is_empty()) {
            self.tls_certificate = checks.take("tls_certificate", TlsPem::parse_chain(cert));
        }
        if let Some(key) = input.tls_key.as_deref().filter(|k| !k.is_empty()) {
            self.tls_key = checks.take("tls_key", TlsPem::parse_key(key));
            self.keep_key = false;
        }
        if self.tls_mode != TlsMode::Custom {
            self.tls_certificate = None;
            self.tls_key = None;
            self.keep_key = false;
        }
        if let Some(r) = &input.redirect_www {
            if let Some(r) = checks.take("redirect_www", RedirectWww::parse(r)) {
                self.redirect_www = r;
            }
        }
        if let Some(r) = input.redirect_https {
            self.redirect_https = r;
        }
    }

    /// A custom certificate checked against its key (the one given, else `stored_key`) and
    /// the vhost's names, as the proxy will load it; `None` for other modes or when a part is
    /// missing (reported by [`Self::inconsistencies`]).
    fn certificate_problem(
        &self,
        domain: &DomainName,
        stored_key: Option<&str>,
    ) -> Option<FieldError> {
        if self.tls_mode != TlsMode::Custom {
            return None;
        }
        let cert = self.tls_certificate.as_ref()?;
        let key = match &self.tls_key {
            Some(k) => k.as_str(),
            None => stored_key?,
        };
        let mut names = vec![domain.as_str()];
        names.extend(self.aliases.iter().map(DomainName::as_str));
        crate::certs::check_upload(cert.as_str(), key, &names).err()
    }

    /// Settings that do not go together once applied (a field may come from the stored vhost).
    fn inconsistencies(&self, input: &VhostInput) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.tls_mode == TlsMode::Custom {
            if self.tls_certificate.is_none()
                && input.tls_certificate.as_deref().is_none_or(str::is_empty)
            {
                errors.push(FieldError::new(
                    "tls_certificate",
                    "is required for custom TLS",
                ));
            }
            if self.tls_key.is_none()
                && !self.keep_key
                && input.tls_key.as_deref().is_none_or(str::is_empty)
            {
                errors.push(FieldError::new("tls_key", "is required for custom TLS"));
            }
        }
        if self.redirect_https && self.tls_mode == TlsMode::None {
            errors.push(FieldError::new(
                "redirect_https",
                "needs TLS: choose self-signed or custom",
            ));
        }
        errors
    }
}

/// Refuses names another vhost (of any tenant) already answers to.
async fn check_names_free(
    tx: &mut sqlx::SqliteConnection,
    names: &[(&'static str, &DomainName)],
    except_vhost: Option<i64>,
) -> Result<(), ControlError> {
    for (field, name) in names {
        let owner: Option<i64> =
            sqlx::query_scalar("SELECT vhost_id FROM vhost_names WHERE name = ?")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if owner.is_some_and(|id| Some(id) != except_vhost) {
            return Err(ControlError::Conflict {
                field,
                message: format!("'{name}' is already served by another vhost"),
            });
        }
    }
    Ok(())
}

async fn insert_names(
    tx: &mut sqlx::SqliteConnection,
    vhost_id: i64,
    domain: &DomainName,
    aliases: &[DomainName],
) -> Result<(), ControlError> {
    let names = std::iter::once((domain, false)).chain(aliases.iter().map(|a| (a, true)));
    for (name, is_alias) in names {
        sqlx::query("INSERT INTO vhost_names (name, vhost_id, is_alias) VALUES (?, ?, ?)")
            .bind(name.as_str())
            .bind(vhost_id)
            .bind(is_alias)
            .execute(&mut *tx)
            .await
            .map_err(on_unique(
                if is_alias { "aliases" } else { "domain" },
                format!("'{name}' is already served by another vhost"),
            ))?;
    }
    Ok(())
}

/// Refuses a new vhost past the tenant's plan or its reseller's limit.
async fn check_vhost_limits(
    tx: &mut sqlx::SqliteConnection,
    tenant: &TenantRow,
) -> Result<(), ControlError> {
    let (plan_max, plan_name): (i64, String) =
        sqlx::query_as("SELECT max_vhosts, name FROM plans WHERE id = ?")
            .bind(tenant.plan_id)
            .fetch_one(&mut *tx)
            .await?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM vhosts WHERE tenant_id = ?")
        .bind(tenant.id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= plan_max {
        return Err(ControlError::LimitExceeded {
            limit: "max_vhosts",
            message: format!(
                "plan '{plan_name}' allows {plan_max} vhosts and tenant '{}' has {count}",
                tenant.name
            ),
        });
    }
    let reseller: Option<(String, Option<i64>)> =
        sqlx::query_as("SELECT username, max_vhosts FROM users WHERE id = ? AND role = 'reseller'")
            .bind(tenant.owner_id)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((reseller, Some(max))) = reseller {
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM vhosts v JOIN tenants t ON t.id = v.tenant_id WHERE t.owner_id = ?",
        )
        .bind(tenant.owner_id)
        .fetch_one(&mut *tx)
        .await?;
        if total >= max {
            return Err(ControlError::LimitExceeded {
                limit: "limits.max_vhosts",
                message: format!("reseller '{reseller}' has reached its limit of {max} vhosts"),
            });
        }
    }
    Ok(())
}

pub async fn create(
    ctl: &Control,
    actor: &Actor,
    tenant_name: &str,
    input: VhostInput,
) -> Result<VhostRow, ControlError> {
    let tenant = super::tenants::get(ctl, actor, tenant_name).await?;
    let mut checks = Checks::new();
    let domain = match &input.domain {
        Some(d) => checks.take("domain", DomainName::parse(d)),
        None => {
            checks.push(FieldError::new("domain", "is required"));
            None
        }
    };
    let mut values = domain
        .as_ref()
        .map(VhostValues::defaults)
        .unwrap_or_else(|| {
            VhostValues::defaults(&DomainName::parse("placeholder.invalid").expect("valid literal"))
        });
    let mut refusals = Vec::new();
    values.apply(&input, domain.as_ref(), &mut checks, &mut refusals);
    // A new vhost's settings all come from the request: ones that do not go together are
    // malformed.
    checks.extend(values.inconsistencies(&input));
    checks.finish().map_err(ControlError::Invalid)?;
    if !refusals.is_empty() {
        return Err(ControlError::Refused(refusals));
    }
    let domain = domain.unwrap();
    // An uploaded pair must belong together and cover the vhost's names: the proxy would
    // otherwise leave it out and the site would have no certificate.
    if let Some(problem) = values.certificate_problem(&domain, None) {
        return Err(ControlError::Invalid(vec![problem]));
    }

    let mut tx = ctl.store.begin().await?;
    check_vhost_limits(&mut tx, &tenant).await?;
    let mut names: Vec<(&'static str, &DomainName)> = vec![("domain", &domain)];
    names.extend(values.aliases.iter().map(|a| ("aliases", a)));
    check_names_free(&mut tx, &names, None).await?;
    let generation = bump_generation(&mut tx).await?;
    let t = now();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO vhosts (tenant_id, domain, docroot, php, front_controller, tls_mode, tls_cert_pem, tls_key_pem,
             redirect_www, redirect_https, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(tenant.id)
    .bind(domain.as_str())
    .bind(values.docroot.as_str())
    .bind(values.php)
    .bind(values.front_controller.as_ref().map(FrontController::as_str))
    .bind(values.tls_mode.as_str())
    .bind(values.tls_certificate.as_ref().map(TlsPem::as_str))
    .bind(values.tls_key.as_ref().map(TlsPem::as_str))
    .bind(values.redirect_www.as_str())
    .bind(values.redirect_https)
    .bind(t)
    .bind(t)
    .fetch_one(&mut *tx)
    .await
    .map_err(on_unique("domain", format!("'{domain}' is already served by another vhost")))?;
    insert_names(&mut tx, id, &domain, &values.aliases).await?;
    touch_tenant(&mut tx, tenant.id, generation).await?;
    super::tenants::refresh_search_text(&mut tx, tenant.id).await?;
    let vhost = fetch(&mut tx, id).await?;
    AuditEntry::new(actor.audit(), "vhost.create", format!("vhost:{domain}"))
        .after(vhost.json())
        .scope(Some(tenant.owner_id), Some(tenant.id))
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(vhost)
}

async fn touch_tenant(
    tx: &mut sqlx::SqliteConnection,
    tenant_id: i64,
    generation: i64,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE tenants SET generation = ?, updated_at = ? WHERE id = ?")
        .bind(generation)
        .bind(now())
        .bind(tenant_id)
        .execute(tx)
        .await
        .map(|_| ())
}

async fn fetch(tx: &mut sqlx::SqliteConnection, id: i64) -> sqlx::Result<VhostRow> {
    sqlx::query_as::<_, VhostRow>(&format!("{} WHERE v.id = ?", VhostRow::SELECT))
        .bind(id)
        .fetch_one(tx)
        .await
}

pub async fn list(
    ctl: &Control,
    actor: &Actor,
    tenant_name: &str,
    page: &PageRequest,
) -> Result<Page<VhostRow>, ControlError> {
    let tenant = super::tenants::get(ctl, actor, tenant_name).await?;
    let rows = sqlx::query_as::<_, VhostRow>(&format!(
        "{} WHERE v.tenant_id = ?1 AND v.domain > COALESCE(?2, '') ORDER BY v.domain LIMIT ?3",
        VhostRow::SELECT
    ))
    .bind(tenant.id)
    .bind(page.after.as_deref())
    .bind(page.fetch())
    .fetch_all(&ctl.store.read)
    .await?;
    Ok(Page::from_rows(rows, page, |v| v.domain.clone()))
}

/// The vhost answering to `domain`, if the actor reaches its tenant.
pub async fn get(ctl: &Control, actor: &Actor, domain: &str) -> Result<VhostRow, ControlError> {
    let domain = DomainName::parse(domain).map_err(|_| ControlError::NotFound("vhost"))?;
    sqlx::query_as::<_, VhostRow>(&format!("{} WHERE v.domain = ?", VhostRow::SELECT))
        .bind(domain.as_str())
        .fetch_optional(&ctl.store.read)
        .await?
        .filter(|v| actor.reaches_tenant(v.tenant_id, v.owner_id))
        .ok_or(ControlError::NotFound("vhost"))
}

pub async fn update(
    ctl: &Control,
    actor: &Actor,
    domain: &str,
    input: VhostInput,
) -> Result<VhostRow, ControlError> {
    let before = get(ctl, actor, domain).await?;
    let domain = DomainName::parse(&before.domain)
        .map_err(|e| ControlError::Internal(anyhow::anyhow!("stored domain: {e}")))?;
    let mut checks = Checks::new();
    let mut refusals = Vec::new();
    let domain_given = input
        .domain
        .as_deref()
        .and_then(|d| checks.take("domain", DomainName::parse(d)));
    if domain_given.is_some_and(|d| d != domain) {
        refusals.push(FieldError::new(
            "domain",
            "cannot be changed; add it as an alias or create a new vhost",
        ));
    }
    let mut values = stored_values(&before)?;
    values.apply(&input, Some(&domain), &mut checks, &mut refusals);
    checks.finish().map_err(ControlError::Invalid)?;
    // What does not go together may come from the stored vhost: a conflict with it.
    refusals.extend(values.inconsistencies(&input));
    if !refusals.is_empty() {
        return Err(ControlError::Refused(refusals));
    }

    let mut tx = ctl.store.begin().await?;
    let stored_key: Option<String> =
        sqlx::query_scalar("SELECT tls_key_pem FROM vhosts WHERE id = ?")
            .bind(before.id)
            .fetch_one(&mut *tx)
            .await?;
    if let Some(problem) = values.certificate_problem(&domain, stored_key.as_deref()) {
        // A pair given whole is malformed; one that no longer fits what is stored (a new
        // alias, a new certificate for the kept key) is refused by the state.
        return Err(if values.tls_key.is_some() {
            ControlError::Invalid(vec![problem])
        } else {
            ControlError::Refused(vec![problem])
        });
    }
    let aliases: Vec<(&'static str, &DomainName)> =
        values.aliases.iter().map(|a| ("aliases", a)).collect();
    check_names_free(&mut tx, &aliases, Some(before.id)).await?;
    let generation = bump_generation(&mut tx).await?;
    sqlx::query(
        "UPDATE vhosts SET docroot = ?, php = ?, front_controller = ?, tls_mode = ?, tls_cert_pem = ?,
             tls_key_pem = CASE WHEN ? THEN tls_key_pem ELSE ? END, redirect_www = ?, redirect_https = ?, updated_at = ? WHERE id = ?",
    )
    .bind(values.docroot.as_str())
    .bind(values.php)
    .bind(values.front_controller.as_ref().map(FrontController::as_str))
    .bind(values.tls_mode.as_str())
    .bind(values.tls_certificate.as_ref().map(TlsPem::as_str))
    .bind(values.keep_key)
    .bind(values.tls_key.as_ref().map(TlsPem::as_str))
    .bind(values.redirect_www.as_str())
    .bind(values.redirect_https)
    .bind(now())
    .bind(before.id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM vhost_names WHERE vhost_id = ?")
        .bind(before.id)
        .execute(&mut *tx)
        .await?;
    insert_names(&mut tx, before.id, &domain, &values.aliases).await?;
    touch_tenant(&mut tx, before.tenant_id, generation).await?;
    super::tenants::refresh_search_text(&mut tx, before.tenant_id).await?;
    let after = fetch(&mut tx, before.id).await?;
    AuditEntry::new(actor.audit(), "vhost.update", format!("vhost:{domain}"))
        .before(before.json())
        .after(after.json())
        .scope(Some(after.owner_id), Some(after.tenant_id))
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(after)
}

/// Reads a stored vhost back into checked values; the store only ever held checked values,
/// so a failure here means it was edited behind lodge's back.
fn stored_values(row: &VhostRow) -> Result<VhostValues, ControlError> {
    let corrupt = |what: &str| {
        ControlError::Internal(anyhow::anyhow!(
            "stored vhost {} has a bad {what}",
            row.domain
        ))
    };
    let mut aliases = Vec::new();
    for a in row.alias_list() {
        aliases.push(DomainName::parse(a).map_err(|_| corrupt("alias"))?);
    }
    Ok(VhostValues {
        aliases,
        docroot: DocRoot::parse(&row.docroot).map_err(|_| corrupt("docroot"))?,
        php: row.php,
        front_controller: row
            .front_controller
            .as_deref()
            .map(FrontController::parse)
            .transpose()
            .map_err(|_| corrupt("front controller"))?,
        tls_mode: row.tls_mode,
        tls_certificate: row
            .tls_cert_pem
            .as_deref()
            .map(TlsPem::parse_chain)
            .transpose()
            .map_err(|_| corrupt("certificate"))?,
        // The key is not read back: an update without a new key keeps the stored one.
        tls_key: None,
        keep_key: row.has_tls_key,
        redirect_www: row.redirect_www,
        redirect_https: row.redirect_https,
    })
}

pub async fn delete(ctl: &Control, actor: &Actor, domain: &str) -> Result<(), ControlError> {
    let vhost = get(ctl, actor, domain).await?;
    let mut tx = ctl.store.begin().await?;
    let generation = bump_generation(&mut tx).await?;
    sqlx::query("DELETE FROM vhosts WHERE id = ?")
        .bind(vhost.id)
        .execute(&mut *tx)
        .await?;
    touch_tenant(&mut tx, vhost.tenant_id, generation).await?;
    super::tenants::refresh_search_text(&mut tx, vhost.tenant_id).await?;
    AuditEntry::new(
        actor.audit(),
        "vhost.delete",
        format!("vhost:{}", vhost.domain),
    )
    .before(vhost.json())
    .scope(Some(vhost.owner_id), Some(vhost.tenant_id))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
