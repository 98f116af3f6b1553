//! Dashboard pages for tenants and their vhosts.

use super::forms::{checked, echo, form_errors, name_list, CsrfForm, Errors};
use super::session::Empty;
use super::{done, form_again, page, when, Chrome, DoneQuery, WebResult, WebUser};
use crate::domain::{AppliedState, PhpSettings, PhpValue, Role, TenantState, TlsMode};
use crate::panel::control::{plans, tenants, users, vhosts, ControlError, PageRequest};
use crate::panel::AppState;
use crate::store::rows::{PlanRow, TenantRow, VhostRow};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{Map, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tenants", get(list).post(create))
        .route("/tenants/new", get(new_form))
        .route("/tenants/{name}", get(detail))
        .route("/tenants/{name}/php", post(update_php))
        .route("/tenants/{name}/plan", post(change_plan))
        .route("/tenants/{name}/suspend", post(suspend))
        .route("/tenants/{name}/unsuspend", post(unsuspend))
        .route("/tenants/{name}/delete", post(delete))
        .route("/tenants/{name}/vhosts/new", get(new_vhost_form))
        .route("/tenants/{name}/vhosts", post(create_vhost))
        .route("/vhosts/{domain}", get(edit_vhost_form).post(update_vhost))
        .route("/vhosts/{domain}/delete", post(delete_vhost))
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    q: Option<String>,
    after: Option<String>,
    done: Option<String>,
}

/// One row of the tenants table.
pub struct TenantLine {
    pub name: String,
    pub owner: String,
    pub plan: String,
    pub state: TenantState,
    pub applied: AppliedState,
    pub uid: i64,
    pub vhosts: i64,
    pub max_vhosts: i64,
}

#[derive(Template)]
#[template(path = "tenants.html")]
struct TenantsPage {
    chrome: Chrome,
    q: String,
    tenants: Vec<TenantLine>,
    next: Option<String>,
    first_page: bool,
    error: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    user: WebUser,
    Query(query): Query<ListQuery>,
) -> WebResult {
    let ctl = &state.control;
    let filter = tenants::TenantFilter {
        search: query.q.clone(),
        owner: None,
    };
    let request = PageRequest::new(Some(25), query.after.clone())?;
    let (rows, next, error) = match tenants::list(ctl, &user.actor, &filter, &request).await {
        Ok(p) => (p.items, p.next, None),
        Err(ControlError::Invalid(e)) => (Vec::new(), None, e.first().map(|e| e.message.clone())),
        Err(e) => return Err(e.into()),
    };
    let plan_limits = plan_vhost_limits(&state, &user).await?;
    let tenants = rows
        .iter()
        .map(|t| TenantLine {
            name: t.name.clone(),
            owner: t.owner.clone(),
            plan: t.plan.clone(),
            state: t.state,
            applied: t.applied().1,
            uid: t.uid,
            vhosts: t.vhost_count,
            max_vhosts: plan_limits
                .iter()
                .find(|(id, _)| *id == t.plan_id)
                .map(|(_, m)| *m)
                .unwrap_or(0),
        })
        .collect();
    page(TenantsPage {
        chrome: Chrome::new(&user, "tenants").with_notice(query.done.as_deref()),
        q: echo(query.q.as_deref().unwrap_or("")),
        tenants,
        next,
        first_page: query.after.is_none(),
        error,
    })
}

/// (plan id, max vhosts) of every plan the user can see.
async fn plan_vhost_limits(
    state: &AppState,
    user: &WebUser,
) -> Result<Vec<(i64, i64)>, ControlError> {
    let all = plans::list(
        &state.control,
        &user.actor,
        &PageRequest::new(Some(500), None)?,
    )
    .await?;
    Ok(all
        .items
        .iter()
        .map(|p| (p.id, p.limits.max_vhosts))
        .collect())
}

// ---- create ----

#[derive(Deserialize, Default, Clone)]
pub struct TenantForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    plan: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    owner: String,
}

#[derive(Template)]
#[template(path = "tenant_new.html")]
struct NewTenantPage {
    chrome: Chrome,
    form: TenantForm,
    plans: Vec<String>,
    owners: Vec<String>,
    errors: Errors,
}

async fn plan_names(state: &AppState, user: &WebUser) -> Result<Vec<String>, ControlError> {
    let all = plans::list(
        &state.control,
        &user.actor,
        &PageRequest::new(Some(500), None)?,
    )
    .await?;
    Ok(all.items.into_iter().map(|p| p.name).collect())
}

/// Accounts an admin may make a tenant's owner: itself and every reseller.
async fn owner_names(state: &AppState, user: &WebUser) -> Result<Vec<String>, ControlError> {
    if user.actor.role != Role::Admin {
        return Ok(Vec::new());
    }
    let resellers = users::list(
        &state.control,
        &user.actor,
        &PageRequest::new(Some(500), None)?,
        Some(Role::Reseller),
    )
    .await?;
    let mut names = vec![user.actor.username.clone()];
    names.extend(resellers.items.into_iter().map(|u| u.username));
    Ok(names)
}

async fn new_form(State(state): State<AppState>, user: WebUser) -> WebResult {
    user.actor.require_tenant_manager("create tenants")?;
    page(NewTenantPage {
        chrome: Chrome::new(&user, "tenants"),
        form: TenantForm::default(),
        plans: plan_names(&state, &user).await?,
        owners: owner_names(&state, &user).await?,
        errors: Errors::default(),
    })
}

async fn create(
    State(state): State<AppState>,
    user: WebUser,
    CsrfForm(form): CsrfForm<TenantForm>,
) -> WebResult {
    let input = tenants::NewTenant {
        name: Some(form.name.clone()),
        plan: Some(form.plan.clone()),
        password: Some(form.password.clone()).filter(|p| !p.is_empty()),
        owner: Some(form.owner.clone()).filter(|o| !o.is_empty()),
        php: None,
    };
    match tenants::create(&state.control, &user.actor, input).await {
        Ok(t) => done(&format!("/tenants/{}", t.name), "created"),
        Err(e) => {
            let (status, errors) = form_errors(e)?;
            let form = TenantForm {
                name: echo(&form.name),
                password: String::new(),
                ..form
            };
            form_again(
                status,
                NewTenantPage {
                    chrome: Chrome::new(&user, "tenants"),
                    form,
                    plans: plan_names(&state, &user).await?,
                    owners: owner_names(&state, &user).await?,
                    errors,
                },
            )
        }
    }
}

// ---- detail ----

/// One PHP setting's row in the settings form.
pub struct PhpField {
    pub key: &'static str,
    pub help: &'static str,
    pub value: String,
    pub flag: bool,
    pub error: Option<String>,
}

pub struct VhostLine {
    pub domain: String,
    pub aliases: String,
    pub docroot: String,
    pub php: bool,
    pub tls: TlsMode,
    pub state: TenantState,
}

impl VhostLine {
    fn of(v: &VhostRow) -> Self {
        Self {
            domain: v.domain.clone(),
            aliases: v.alias_list().join(", "),
            docroot: v.docroot.clone(),
            php: v.php,
            tls: v.tls_mode,
            state: v.state(),
        }
    }
}

/// The pool's health for the tenant page, with the last hour as a small chart.
pub struct HealthView {
    pub ok: bool,
    pub checked: String,
    pub error: Option<String>,
    pub ping: String,
    pub active: i64,
    pub idle: i64,
    pub total: i64,
    pub listen_queue: i64,
    pub max_children_reached: i64,
    pub slow_requests: i64,
    pub restarts: i64,
    pub memory_mb: i64,
    pub processes: i64,
    /// SVG polyline points (600 x 80 box) of active and total processes over the hour.
    pub active_points: String,
    pub total_points: String,
    pub chart_max: i64,
}

const CHART_W: f64 = 600.0;
const CHART_H: f64 = 80.0;

fn health_view(
    current: &crate::store::rows::HealthRow,
    samples: &[crate::store::rows::HealthSample],
    max_children: i64,
) -> HealthView {
    let chart_max = samples
        .iter()
        .filter_map(|s| s.total_processes)
        .max()
        .unwrap_or(0)
        .max(max_children)
        .max(1);
    let now = crate::store::now();
    let points = |value: &dyn Fn(&crate::store::rows::HealthSample) -> Option<i64>| {
        samples
            .iter()
            .filter_map(|s| value(s).map(|v| (s.at, v)))
            .map(|(at, v)| {
                let x = CHART_W - ((now - at) as f64 / 3600.0 * CHART_W).clamp(0.0, CHART_W);
                let y = CHART_H - (v as f64 / chart_max as f64 * (CHART_H - 4.0)) - 2.0;
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    HealthView {
        ok: current.ok,
        checked: when(current.checked_at),
        error: current.error.clone(),
        ping: current
            .ping_ms
            .map(|p| format!("{p:.1} ms"))
            .unwrap_or_else(|| "—".into()),
        active: current.active_processes.unwrap_or(0),
        idle: current.idle_processes.unwrap_or(0),
        total: current.total_processes.unwrap_or(0),
        listen_queue: current.listen_queue.unwrap_or(0),
        max_children_reached: current.max_children_reached.unwrap_or(0),
        slow_requests: current.slow_requests.unwrap_or(0),
        restarts: current.restarts,
        memory_mb: current.memory_bytes.unwrap_or(0) / (1024 * 1024),
        processes: current.processes.unwrap_or(0),
        active_points: points(&|s| s.active_processes),
        total_points: points(&|s| s.total_processes),
        chart_max,
    }
}

#[derive(Template)]
#[template(path = "tenant.html")]
struct TenantPage {
    chrome: Chrome,
    tenant: TenantRow,
    applied_state: AppliedState,
    applied_generation: i64,
    created: String,
    plan: PlanRow,
    plans: Vec<String>,
    vhosts: Vec<VhostLine>,
    more_vhosts: bool,
    php_fields: Vec<PhpField>,
    php_errors: Vec<String>,
    general_error: Option<String>,
    usage_warn: bool,
    health: Option<HealthView>,
    fpm_socket: String,
}

fn php_fields(
    stored: &PhpSettings,
    submitted: Option<&Map<String, Value>>,
    errors: &Errors,
) -> Vec<PhpField> {
    PhpSettings::whitelist()
        .map(|(key, help)| {
            let flag = matches!(key, "display_errors" | "short_open_tag" | "allow_url_fopen");
            let value = match submitted.and_then(|m| m.get(key)) {
                Some(Value::String(s)) => echo(s),
                Some(_) | None => match stored.get(key) {
                    Some(PhpValue::Flag(true)) => "on".into(),
                    Some(PhpValue::Flag(false)) => "off".into(),
                    Some(v) => v.ini(),
                    None => String::new(),
                },
            };
            PhpField {
                key,
                help,
                value,
                flag,
                error: errors.get(&format!("php.{key}")).map(str::to_owned),
            }
        })
        .collect()
}

async fn render_detail(
    state: &AppState,
    user: &WebUser,
    name: &str,
    notice: Option<&str>,
    submitted: Option<&Map<String, Value>>,
    errors: Errors,
) -> Result<TenantPage, super::WebError> {
    let ctl = &state.control;
    let tenant = tenants::get(ctl, &user.actor, name).await?;
    let plan = plans::get(ctl, &crate::panel::policy::Actor::cli(), &tenant.plan).await?;
    let vhost_page =
        vhosts::list(ctl, &user.actor, name, &PageRequest::new(Some(200), None)?).await?;
    let stored =
        PhpSettings::from_stored(&tenant.php_settings, &crate::domain::PhpBounds::UNBOUNDED)
            .unwrap_or_default();
    let (applied_generation, applied_state, _) = tenant.applied();
    let (_, current, samples) = tenants::health(ctl, &user.actor, name).await?;
    let health = current
        .as_ref()
        .map(|c| health_view(c, &samples, plan.limits.php_max_children));
    let php_errors = errors.others(&["php"]);
    Ok(TenantPage {
        chrome: Chrome::new(user, "tenants").with_notice(notice),
        applied_state,
        applied_generation,
        created: when(tenant.created_at),
        usage_warn: plan.limits.max_vhosts > 0
            && tenant.vhost_count * 10 >= plan.limits.max_vhosts * 9,
        plans: if user.actor.role == Role::Tenant {
            Vec::new()
        } else {
            plan_names(state, user).await?
        },
        vhosts: vhost_page.items.iter().map(VhostLine::of).collect(),
        more_vhosts: vhost_page.next.is_some(),
        php_fields: php_fields(&stored, submitted, &errors),
        php_errors,
        general_error: errors.general.clone(),
        health,
        fpm_socket: tenants::fpm_socket(ctl, &tenant.name),
        tenant,
        plan,
    })
}

async fn detail(
    State(state): State<AppState>,
    user: WebUser,
    Path(name): Path<String>,
    Query(q): Query<DoneQuery>,
) -> WebResult {
    page(
        render_detail(
            &state,
            &user,
            &name,
            q.done.as_deref(),
            None,
            Errors::default(),
        )
        .await?,
    )
}

async fn update_php(
    State(state): State<AppState>,
    user: WebUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<std::collections::HashMap<String, String>>,
) -> WebResult {
    // Only whitelisted keys are read from the form; an empty field (or "default") removes the setting.
    let mut changes = Map::new();
    for (key, _) in PhpSettings::whitelist() {
        let field = format!("php.{key}");
        if let Some(raw) = form.get(&field) {
            let value = if raw.is_empty() || raw == "default" {
                Value::Null
            } else {
                Value::String(raw.clone())
            };
            changes.insert(key.to_owned(), value);
        }
    }
    let patch = tenants::TenantPatch {
        php: Some(changes.clone()),
        ..Default::default()
    };
    match tenants::update(&state.control, &user.actor, &name, patch).await {
        Ok(_) => done(&format!("/tenants/{name}"), "saved"),
        Err(e) => {
            let (status, errors) = form_errors(e)?;
            form_again(
                status,
                render_detail(&state, &user, &name, None, Some(&changes), errors).await?,
            )
        }
    }
}

#[derive(Deserialize)]
struct PlanForm {
    #[serde(default)]
    plan: String,
}

async fn change_plan(
    State(state): State<AppState>,
    user: WebUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<PlanForm>,
) -> WebResult {
    let patch = tenants::TenantPatch {
        plan: Some(form.plan),
        ..Default::default()
    };
    match tenants::update(&state.control, &user.actor, &name, patch).await {
        Ok(_) => done(&format!("/tenants/{name}"), "saved"),
        Err(e) => {
            let (status, errors) = form_errors(e)?;
            let mut errors = errors;
            if errors.general.is_none() {
                errors.general = errors
                    .list
                    .first()
                    .map(|e| format!("{}: {}", e.field, e.message));
            }
            form_again(
                status,
                render_detail(&state, &user, &name, None, None, errors).await?,
            )
        }
    }
}

async fn suspend(
    State(state): State<AppState>,
    user: WebUser,
    Path(name): Path<String>,
    _: CsrfForm<Empty>,
) -> WebResult {
    tenants::set_suspended(&state.control, &user.actor, &name, true).await?;
    done(&format!("/tenants/{name}"), "suspended")
}

async fn unsuspend(
    State(state): State<AppState>,
    user: WebUser,
    Path(name): Path<String>,
    _: CsrfForm<Empty>,
) -> WebResult {
    tenants::set_suspended(&state.control, &user.actor, &name, false).await?;
    done(&format!("/tenants/{name}"), "unsuspended")
}

#[derive(Deserialize)]
struct ConfirmForm {
    #[serde(default)]
    confirm: String,
}

async fn delete(
    State(state): State<AppState>,
    user: WebUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<ConfirmForm>,
) -> WebResult {
    if form.confirm != name {
        let errors = Errors {
            list: Vec::new(),
            general: Some(format!("Type '{name}' to confirm the deletion.")),
        };
        // Reaching the tenant first keeps someone else's tenant a 404.
        let page = render_detail(&state, &user, &name, None, None, errors).await?;
        return form_again(axum::http::StatusCode::UNPROCESSABLE_ENTITY, page);
    }
    tenants::delete(&state.control, &user.actor, &name).await?;
    done("/tenants", "deleted")
}

// ---- vhosts ----

#[derive(Deserialize, Default, Clone)]
pub struct VhostForm {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    aliases: String,
    #[serde(default)]
    docroot: String,
    php: Option<String>,
    #[serde(default)]
    front_controller: String,
    #[serde(default)]
    tls_mode: String,
    #[serde(default)]
    tls_certificate: String,
    #[serde(default)]
    tls_key: String,
    #[serde(default)]
    redirect_www: String,
    redirect_https: Option<String>,
}

impl VhostForm {
    fn input(&self, creating: bool) -> vhosts::VhostInput {
        let text = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        vhosts::VhostInput {
            domain: if creating {
                Some(self.domain.clone())
            } else {
                None
            },
            aliases: Some(name_list(&self.aliases)),
            docroot: text(&self.docroot),
            php: Some(checked(&self.php)),
            front_controller: Some(self.front_controller.clone()),
            tls_mode: text(&self.tls_mode),
            tls_certificate: text(&self.tls_certificate),
            tls_key: text(&self.tls_key),
            redirect_www: text(&self.redirect_www),
            redirect_https: Some(checked(&self.redirect_https)),
        }
    }

    fn of(v: &VhostRow) -> Self {
        Self {
            domain: v.domain.clone(),
            aliases: v.alias_list().join("\n"),
            docroot: v.docroot.clone(),
            php: v.php.then(|| "on".into()),
            front_controller: v.front_controller.clone().unwrap_or_default(),
            tls_mode: v.tls_mode.as_str().to_owned(),
            tls_certificate: v.tls_cert_pem.clone().unwrap_or_default(),
            tls_key: String::new(),
            redirect_www: v.redirect_www.as_str().to_owned(),
            redirect_https: v.redirect_https.then(|| "on".into()),
        }
    }

    /// The submitted values, cut to a sane length, to show again; the key is never echoed.
    fn echoed(&self) -> Self {
        Self {
            domain: echo(&self.domain),
            aliases: echo(&self.aliases),
            docroot: echo(&self.docroot),
            front_controller: echo(&self.front_controller),
            tls_certificate: self.tls_certificate.chars().take(70_000).collect(),
            tls_key: String::new(),
            ..self.clone()
        }
    }

    pub fn php_on(&self) -> bool {
        checked(&self.php)
    }

    pub fn https_on(&self) -> bool {
        checked(&self.redirect_https)
    }
}

#[derive(Template)]
#[template(path = "vhost_form.html")]
struct VhostPage {
    chrome: Chrome,
    tenant: String,
    creating: bool,
    form: VhostForm,
    has_key: bool,
    errors: Errors,
    other_errors: Vec<String>,
}

const VHOST_FIELDS: &[&str] = &[
    "domain",
    "aliases",
    "docroot",
    "php",
    "front_controller",
    "tls_mode",
    "tls_certificate",
    "tls_key",
    "redirect_www",
    "redirect_https",
];

async fn new_vhost_form(
    State(state): State<AppState>,
    user: WebUser,
    Path(name): Path<String>,
) -> WebResult {
    let tenant = tenants::get(&state.control, &user.actor, &name).await?;
    let form = VhostForm {
        php: Some("on".into()),
        tls_mode: "none".into(),
        redirect_www: "none".into(),
        ..Default::default()
    };
    page(VhostPage {
        chrome: Chrome::new(&user, "tenants"),
        tenant: tenant.name,
        creating: true,
        form,
        has_key: false,
        errors: Errors::default(),
        other_errors: Vec::new(),
    })
}

async fn create_vhost(
    State(state): State<AppState>,
    user: WebUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<VhostForm>,
) -> WebResult {
    match vhosts::create(&state.control, &user.actor, &name, form.input(true)).await {
        Ok(_) => done(&format!("/tenants/{name}"), "created"),
        Err(e) => {
            let (status, errors) = form_errors(e)?;
            let tenant = tenants::get(&state.control, &user.actor, &name).await?;
            form_again(
                status,
                VhostPage {
                    chrome: Chrome::new(&user, "tenants"),
                    tenant: tenant.name,
                    creating: true,
                    form: form.echoed(),
                    has_key: false,
                    other_errors: errors.others(VHOST_FIELDS),
                    errors,
                },
            )
        }
    }
}

async fn edit_vhost_form(
    State(state): State<AppState>,
    user: WebUser,
    Path(domain): Path<String>,
    Query(q): Query<DoneQuery>,
) -> WebResult {
    let vhost = vhosts::get(&state.control, &user.actor, &domain).await?;
    page(VhostPage {
        chrome: Chrome::new(&user, "tenants").with_notice(q.done.as_deref()),
        tenant: vhost.tenant.clone(),
        creating: false,
        form: VhostForm::of(&vhost),
        has_key: vhost.has_tls_key,
        errors: Errors::default(),
        other_errors: Vec::new(),
    })
}

async fn update_vhost(
    State(state): State<AppState>,
    user: WebUser,
    Path(domain): Path<String>,
    CsrfForm(form): CsrfForm<VhostForm>,
) -> WebResult {
    match vhosts::update(&state.control, &user.actor, &domain, form.input(false)).await {
        Ok(v) => done(&format!("/vhosts/{}", v.domain), "saved"),
        Err(e) => {
            let (status, errors) = form_errors(e)?;
            let vhost = vhosts::get(&state.control, &user.actor, &domain).await?;
            let form = VhostForm {
                domain: vhost.domain.clone(),
                ..form.echoed()
            };
            form_again(
                status,
                VhostPage {
                    chrome: Chrome::new(&user, "tenants"),
                    tenant: vhost.tenant.clone(),
                    creating: false,
                    form,
                    has_key: vhost.has_tls_key,
                    other_errors: errors.others(VHOST_FIELDS),
                    errors,
                },
            )
        }
    }
}

async fn delete_vhost(
    State(state): State<AppState>,
    user: WebUser,
    Path(domain): Path<String>,
    _: CsrfForm<Empty>,
) -> WebResult {
    let vhost = vhosts::get(&state.control, &user.actor, &domain).await?;
    vhosts::delete(&state.control, &user.actor, &domain).await?;
    done(&format!("/tenants/{}", vhost.tenant), "deleted")
}
