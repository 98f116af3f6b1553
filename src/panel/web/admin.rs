//! Dashboard pages for resellers, plans and the audit log.

use super::forms::{echo, form_errors, name_list, number, CsrfForm, Errors};
use super::session::Empty;
use super::{done, form_again, page, when, Chrome, DoneQuery, WebResult, WebUser};
use crate::domain::{FieldError, Role};
use crate::panel::control::{audit, plans, users, ControlError, PageRequest};
use crate::panel::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/resellers", get(resellers).post(create_reseller))
        .route("/resellers/{name}", post(update_reseller))
        .route("/resellers/{name}/delete", post(delete_reseller))
        .route("/plans", get(plans_page).post(create_plan))
        .route("/plans/new", get(new_plan))
        .route("/plans/{name}", get(edit_plan).post(update_plan))
        .route("/plans/{name}/delete", post(delete_plan))
        .route("/audit", get(audit_page))
}

// ---- resellers ----

pub struct ResellerLine {
    pub username: String,
    pub tenants: i64,
    pub vhosts: i64,
    pub workers: i64,
    pub max_tenants: String,
    pub max_vhosts: String,
    pub max_php_workers: String,
    pub max_tenants_n: Option<i64>,
}

#[derive(Deserialize, Default, Clone)]
pub struct ResellerForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    max_tenants: String,
    #[serde(default)]
    max_vhosts: String,
    #[serde(default)]
    max_php_workers: String,
}

impl ResellerForm {
    fn limits(&self, errors: &mut Vec<FieldError>) -> users::Limits {
        users::Limits {
            max_tenants: number(errors, "limits.max_tenants", &self.max_tenants),
            max_vhosts: number(errors, "limits.max_vhosts", &self.max_vhosts),
            max_php_workers: number(errors, "limits.max_php_workers", &self.max_php_workers),
        }
    }
}

#[derive(Template)]
#[template(path = "resellers.html")]
struct ResellersPage {
    chrome: Chrome,
    resellers: Vec<ResellerLine>,
    form: ResellerForm,
    errors: Errors,
}

async fn reseller_lines(
    state: &AppState,
    user: &WebUser,
) -> Result<Vec<ResellerLine>, ControlError> {
    let list = users::list(
        &state.control,
        &user.actor,
        &PageRequest::new(Some(500), None)?,
        Some(Role::Reseller),
    )
    .await?;
    let mut lines = Vec::with_capacity(list.items.len());
    for r in list.items {
        let (tenants, vhosts, workers): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM((SELECT COUNT(*) FROM vhosts v WHERE v.tenant_id = t.id)), 0),
                    COALESCE(SUM(p.php_max_children), 0)
             FROM tenants t JOIN plans p ON p.id = t.plan_id WHERE t.owner_id = ?",
        )
        .bind(r.id)
        .fetch_one(&state.control.store.read)
        .await?;
        let show = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
        lines.push(ResellerLine {
            username: r.username.clone(),
            tenants,
            vhosts,
            workers,
            max_tenants: show(r.max_tenants),
            max_vhosts: show(r.max_vhosts),
            max_php_workers: show(r.max_php_workers),
            max_tenants_n: r.max_tenants,
        });
    }
    Ok(lines)
}

async fn resellers(
    State(state): State<AppState>,
    user: WebUser,
    Query(q): Query<DoneQuery>,
) -> WebResult {
    user.actor.require_admin("manage resellers")?;
    page(ResellersPage {
        chrome: Chrome::new(&user, "resellers").with_notice(q.done.as_deref()),
        resellers: reseller_lines(&state, &user).await?,
        form: ResellerForm::default(),
        errors: Errors::default(),
    })
}

async fn resellers_again(
    state: &AppState,
    user: &WebUser,
    form: ResellerForm,
    status: StatusCode,
    errors: Errors,
) -> WebResult {
    let form = ResellerForm {
        username: echo(&form.username),
        password: String::new(),
        ..form
    };
    form_again(
        status,
        ResellersPage {
            chrome: Chrome::new(user, "resellers"),
            resellers: reseller_lines(state, user).await?,
            form,
            errors,
        },
    )
}

async fn create_reseller(
    State(state): State<AppState>,
    user: WebUser,
    CsrfForm(form): CsrfForm<ResellerForm>,
) -> WebResult {
    let mut number_errors = Vec::new();
    let limits = form.limits(&mut number_errors);
    let result = if number_errors.is_empty() {
        let input = users::NewUser {
            username: Some(form.username.clone()),
            password: Some(form.password.clone()),
            role: Some(crate::domain::Role::Reseller.as_str().into()),
            limits: Some(limits),
        };
        users::create(&state.control, &user.actor, input)
            .await
            .map(|_| ())
    } else {
        Err(ControlError::Invalid(number_errors))
    };
    match result {
        Ok(()) => done("/resellers", "created"),
        Err(e) => {
            let (status, errors) = form_errors(e)?;
            resellers_again(&state, &user, form, status, errors).await
        }
    }
}

async fn update_reseller(
    State(state): State<AppState>,
    user: WebUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<ResellerForm>,
) -> WebResult {
    let mut number_errors = Vec::new();
    let limits = form.limits(&mut number_errors);
    let result = if number_errors.is_empty() {
        let patch = users::UserPatch {
            limits: Some(limits),
            ..Default::default()
        };
        users::update(&state.control, &user.actor, &name, patch)
            .await
            .map(|_| ())
    } else {
        Err(ControlError::Invalid(number_errors))
    };
    match result {
        Ok(()) => done("/resellers", "saved"),
        Err(e) => {
            let (status, mut errors) = form_errors(e)?;
            errors.general = Some(format!(
                "Limits of '{}' not saved: {}",
                echo(&name),
                errors
                    .list
                    .iter()
                    .map(|e| format!("{} {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            resellers_again(&state, &user, ResellerForm::default(), status, errors).await
        }
    }
}

async fn delete_reseller(
    State(state): State<AppState>,
    user: WebUser,
    Path(name): Path<String>,
    _: CsrfForm<Empty>,
) -> WebResult {
    users::delete(&state.control, &user.actor, &name).await?;
    done("/resellers", "deleted")
}

// ---- plans ----

pub struct PlanLine {
    pub name: String,
    pub max_vhosts: i64,
    pub pm: String,
    pub max_children: i64,
    pub memory_limit_mb: i64,
    pub upload_max_mb: i64,
    pub disk_mb: i64,
    pub memory_mb: i64,
    pub tenants: i64,
}

#[derive(Template)]
#[template(path = "plans.html")]
struct PlansPage {
    chrome: Chrome,
    plans: Vec<PlanLine>,
}

async fn plans_page(
    State(state): State<AppState>,
    user: WebUser,
    Query(q): Query<DoneQuery>,
) -> WebResult {
    let list = plans::list(
        &state.control,
        &user.actor,
        &PageRequest::new(Some(500), None)?,
    )
    .await?;
    let mut lines = Vec::new();
    for p in list.items {
        let tenants: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE plan_id = ?")
            .bind(p.id)
            .fetch_one(&state.control.store.read)
            .await?;
        lines.push(PlanLine {
            name: p.name,
            max_vhosts: p.limits.max_vhosts,
            pm: p.limits.php_pm,
            max_children: p.limits.php_max_children,
            memory_limit_mb: p.limits.php_memory_limit_mb,
            upload_max_mb: p.limits.php_upload_max_mb,
            disk_mb: p.limits.disk_mb,
            memory_mb: p.limits.memory_mb,
            tenants,
        });
    }
    page(PlansPage {
        chrome: Chrome::new(&user, "plans").with_notice(q.done.as_deref()),
        plans: lines,
    })
}

#[derive(Deserialize, Default, Clone)]
pub struct PlanForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    max_vhosts: String,
    #[serde(default)]
    pm: String,
    #[serde(default)]
    max_children: String,
    #[serde(default)]
    max_requests: String,
    #[serde(default)]
    memory_limit_mb: String,
    #[serde(default)]
    upload_max_mb: String,
    #[serde(default)]
    max_execution_time: String,
    #[serde(default)]
    disable_functions: String,
    #[serde(default)]
    disk_mb: String,
    #[serde(default)]
    memory_mb: String,
    #[serde(default)]
    cpu_percent: String,
    #[serde(default)]
    max_processes: String,
}

impl PlanForm {
    fn input(&self) -> Result<crate::domain::PlanChanges, ControlError> {
        let mut errors = Vec::new();
        let input = crate::domain::PlanChanges {
            name: Some(self.name.clone()),
            max_vhosts: number(&mut errors, "max_vhosts", &self.max_vhosts),
            php: Some(crate::domain::PlanPhpChanges {
                pm: Some(self.pm.clone()).filter(|p| !p.is_empty()),
                max_children: number(&mut errors, "php.max_children", &self.max_children),
                max_requests: number(&mut errors, "php.max_requests", &self.max_requests),
                memory_limit_mb: number(&mut errors, "php.memory_limit_mb", &self.memory_limit_mb),
                upload_max_mb: number(&mut errors, "php.upload_max_mb", &self.upload_max_mb),
                max_execution_time: number(
                    &mut errors,
                    "php.max_execution_time",
                    &self.max_execution_time,
                ),
                disable_functions: Some(name_list(&self.disable_functions)),
            }),
            disk_mb: number(&mut errors, "disk_mb", &self.disk_mb),
            memory_mb: number(&mut errors, "memory_mb", &self.memory_mb),
            cpu_percent: number(&mut errors, "cpu_percent", &self.cpu_percent),
            max_processes: number(&mut errors, "max_processes", &self.max_processes),
        };
        if errors.is_empty() {
            Ok(input)
        } else {
            Err(ControlError::Invalid(errors))
        }
    }

    fn of(p: &crate::store::rows::PlanRow) -> Self {
        Self {
            name: p.name.clone(),
            max_vhosts: p.limits.max_vhosts.to_string(),
            pm: p.limits.php_pm.clone(),
            max_children: p.limits.php_max_children.to_string(),
            max_requests: p.limits.php_max_requests.to_string(),
            memory_limit_mb: p.limits.php_memory_limit_mb.to_string(),
            upload_max_mb: p.limits.php_upload_max_mb.to_string(),
            max_execution_time: p.limits.php_max_execution_time.to_string(),
            disable_functions: p.limits.disable_functions().join(", "),
            disk_mb: p.limits.disk_mb.to_string(),
            memory_mb: p.limits.memory_mb.to_string(),
            cpu_percent: p.limits.cpu_percent.to_string(),
            max_processes: p.limits.max_processes.to_string(),
        }
    }

    fn echoed(&self) -> Self {
        Self {
            name: echo(&self.name),
            max_vhosts: echo(&self.max_vhosts),
            max_children: echo(&self.max_children),
            max_requests: echo(&self.max_requests),
            memory_limit_mb: echo(&self.memory_limit_mb),
            upload_max_mb: echo(&self.upload_max_mb),
            max_execution_time: echo(&self.max_execution_time),
            disable_functions: echo(&self.disable_functions),
            disk_mb: echo(&self.disk_mb),
            memory_mb: echo(&self.memory_mb),
            cpu_percent: echo(&self.cpu_percent),
            max_processes: echo(&self.max_processes),
            pm: echo(&self.pm),
        }
    }
}

#[derive(Template)]
#[template(path = "plan_form.html")]
struct PlanPage {
    chrome: Chrome,
    creating: bool,
    form: PlanForm,
    errors: Errors,
}

async fn new_plan(user: WebUser) -> WebResult {
    user.actor.require_admin("create plans")?;
    let defaults = PlanForm {
        max_vhosts: "10".into(),
        pm: "ondemand".into(),
        max_children: "5".into(),
        max_requests: "500".into(),
        memory_limit_mb: "256".into(),
        upload_max_mb: "64".into(),
        max_execution_time: "60".into(),
        disable_functions: crate::domain::DEFAULT_DISABLE_FUNCTIONS.join(", "),
        disk_mb: "10240".into(),
        memory_mb: "1024".into(),
        cpu_percent: "100".into(),
        max_processes: "64".into(),
        name: String::new(),
    };
    page(PlanPage {
        chrome: Chrome::new(&user, "plans"),
        creating: true,
        form: defaults,
        errors: Errors::default(),
    })
}

async fn create_plan(
    State(state): State<AppState>,
    user: WebUser,
    CsrfForm(form): CsrfForm<PlanForm>,
) -> WebResult {
    let result = match form.input() {
        Ok(input) => plans::create(&state.control, &user.actor, input)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => done("/plans", "created"),
        Err(e) => {
            let (status, errors) = form_errors(e)?;
            form_again(
                status,
                PlanPage {
                    chrome: Chrome::new(&user, "plans"),
                    creating: true,
                    form: form.echoed(),
                    errors,
                },
            )
        }
    }
}

async fn edit_plan(
    State(state): State<AppState>,
    user: WebUser,
    Path(name): Path<String>,
) -> WebResult {
    let plan = plans::get(&state.control, &user.actor, &name).await?;
    page(PlanPage {
        chrome: Chrome::new(&user, "plans"),
        creating: false,
        form: PlanForm::of(&plan),
        errors: Errors::default(),
    })
}

async fn update_plan(
    State(state): State<AppState>,
    user: WebUser,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<PlanForm>,
) -> WebResult {
    let result = match form.input() {
        Ok(mut input) => {
            input.name = None;
            plans::update(&state.control, &user.actor, &name, input)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => done("/plans", "saved"),
        Err(e) => {
            let (status, errors) = form_errors(e)?;
            let plan = plans::get(&state.control, &user.actor, &name).await?;
            let form = PlanForm {
                name: plan.name,
                ..form.echoed()
            };
            form_again(
                status,
                PlanPage {
                    chrome: Chrome::new(&user, "plans"),
                    creating: false,
                    form,
                    errors,
                },
            )
        }
    }
}

async fn delete_plan(
    State(state): State<AppState>,
    user: WebUser,
    Path(name): Path<String>,
    _: CsrfForm<Empty>,
) -> WebResult {
    plans::delete(&state.control, &user.actor, &name).await?;
    done("/plans", "deleted")
}

// ---- audit ----

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    actor: Option<String>,
    target: Option<String>,
    after: Option<String>,
}

pub struct AuditLine {
    pub when: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub source: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    actor: String,
    target: String,
    lines: Vec<AuditLine>,
    next: Option<String>,
}

fn pretty(json: &Option<String>) -> Option<String> {
    json.as_deref()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
}

async fn audit_page(
    State(state): State<AppState>,
    user: WebUser,
    Query(q): Query<AuditQuery>,
) -> WebResult {
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
    let filter = audit::AuditFilter {
        actor: nonempty(&q.actor),
        target: nonempty(&q.target),
        since: None,
        until: None,
    };
    let result = audit::list(
        &state.control,
        &user.actor,
        &filter,
        &PageRequest::new(Some(50), q.after.clone())?,
    )
    .await?;
    let lines = result
        .items
        .iter()
        .map(|r| AuditLine {
            when: when(r.at),
            actor: r.actor.clone(),
            action: r.action.clone(),
            target: r.target.clone(),
            source: r.source.clone(),
            before: pretty(&r.before),
            after: pretty(&r.after),
        })
        .collect();
    page(AuditPage {
        chrome: Chrome::new(&user, "audit"),
        actor: echo(q.actor.as_deref().unwrap_or("")),
        target: echo(q.target.as_deref().unwrap_or("")),
        lines,
        next: result.next,
    })
}
