//! The API's handlers: thin, each parses its input, calls the control plane and shapes the
//! answer.

use super::error::ApiError;
use super::extract::{actor_of, ApiActor, ApiJson, ApiQuery, Source};
use crate::domain::Role;
use crate::panel::auth::session::{sign_in, SignInError};
use crate::panel::control::{
    access_log, audit, plans, tenants, tokens, users, vhosts, ControlError, Page,
};
use crate::panel::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

type ApiResult = Result<Response, ApiError>;

fn collection<T>(page: Page<T>, view: impl Fn(&T) -> Value) -> Response {
    Json(json!({"items": page.items.iter().map(view).collect::<Vec<_>>(), "next": page.next}))
        .into_response()
}

fn created(body: Value) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

// ---- tokens and the current account ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    username: Option<String>,
    password: Option<String>,
    /// The current code, for an account with a second factor.
    totp: Option<String>,
    /// A label for the token list.
    name: Option<String>,
}

pub async fn create_token(
    State(state): State<AppState>,
    Source(source): Source,
    ApiJson(body): ApiJson<TokenRequest>,
) -> ApiResult {
    let username = body.username.unwrap_or_default();
    let password = body.password.unwrap_or_default();
    let user = sign_in(
        &state.control.store,
        &state.throttle,
        &username,
        &password,
        body.totp.as_deref(),
        &source,
    )
    .await
    .map_err(|e| match e {
        SignInError::Throttled(wait) => ApiError::Throttled(wait),
        SignInError::Rejected => ApiError::Control(ControlError::Unauthorized(
            "wrong user name, password or code".into(),
        )),
        SignInError::CodeRequired => ApiError::Control(ControlError::Unauthorized(
            "this account has two-factor sign-in: send the current code as 'totp'".into(),
        )),
        SignInError::Internal(e) => ApiError::Control(ControlError::Internal(e)),
    })?;
    let actor = actor_of(&user, source);
    let name = body.name.unwrap_or_else(|| "api".into());
    let (token, id) = tokens::issue(&state.control, &actor, &user, &name).await?;
    Ok(created(
        json!({"token": token, "id": id, "name": name.trim(), "username": user.username}),
    ))
}

/// Tokens are paged like every other collection (oldest first, by id), though an account
/// has few: `?limit=` and `?after=` mean the same on every route.
pub async fn list_tokens(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    q: ApiQuery,
) -> ApiResult {
    let page = q.page()?;
    let after: Option<i64> = match page.after.as_deref() {
        Some(a) => Some(
            a.parse()
                .map_err(|_| ControlError::invalid("after", "is not a cursor lodge gave out"))?,
        ),
        None => None,
    };
    let rows: Vec<_> = tokens::list(&state.control, &actor)
        .await?
        .into_iter()
        .filter(|t| after.is_none_or(|a| t.id > a))
        .take(page.fetch() as usize)
        .collect();
    Ok(collection(
        Page::from_rows(rows, &page, |t| t.id.to_string()),
        |t| t.json(),
    ))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
) -> ApiResult {
    let id: i64 = id.parse().map_err(|_| ControlError::NotFound("token"))?;
    tokens::revoke(&state.control, &actor, id).await?;
    Ok(no_content())
}

pub async fn me(State(state): State<AppState>, ApiActor(actor): ApiActor) -> ApiResult {
    Ok(Json(
        users::get(&state.control, &actor, &actor.username)
            .await?
            .json(),
    )
    .into_response())
}

// ---- users ----

pub async fn list_users(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    q: ApiQuery,
) -> ApiResult {
    let role = match q.get("role") {
        Some(r) => Some(Role::parse(r).map_err(|e| ControlError::Invalid(vec![e.at("role")]))?),
        None => None,
    };
    let page = users::list(&state.control, &actor, &q.page()?, role).await?;
    Ok(collection(page, |u| u.json()))
}

pub async fn create_user(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiJson(body): ApiJson<users::NewUser>,
) -> ApiResult {
    Ok(created(
        users::create(&state.control, &actor, body).await?.json(),
    ))
}

pub async fn get_user(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(Json(users::get(&state.control, &actor, &name).await?.json()).into_response())
}

pub async fn update_user(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<users::UserPatch>,
) -> ApiResult {
    Ok(Json(
        users::update(&state.control, &actor, &name, body)
            .await?
            .json(),
    )
    .into_response())
}

pub async fn delete_user(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(name): Path<String>,
) -> ApiResult {
    users::delete(&state.control, &actor, &name).await?;
    Ok(no_content())
}

// ---- plans ----

pub async fn list_plans(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    q: ApiQuery,
) -> ApiResult {
    Ok(collection(
        plans::list(&state.control, &actor, &q.page()?).await?,
        |p| p.json(),
    ))
}

pub async fn create_plan(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiJson(body): ApiJson<crate::domain::PlanChanges>,
) -> ApiResult {
    Ok(created(
        plans::create(&state.control, &actor, body).await?.json(),
    ))
}

pub async fn get_plan(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(Json(plans::get(&state.control, &actor, &name).await?.json()).into_response())
}

pub async fn update_plan(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<crate::domain::PlanChanges>,
) -> ApiResult {
    Ok(Json(
        plans::update(&state.control, &actor, &name, body)
            .await?
            .json(),
    )
    .into_response())
}

pub async fn delete_plan(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(name): Path<String>,
) -> ApiResult {
    plans::delete(&state.control, &actor, &name).await?;
    Ok(no_content())
}

// ---- tenants ----

/// A tenant as the API shows it: the stored view plus where its PHP-FPM socket is.
fn tenant_json(state: &AppState, t: &crate::store::rows::TenantRow) -> Value {
    let mut v = t.json();
    v["fpm_socket"] = json!(tenants::fpm_socket(&state.control, &t.name));
    v
}

pub async fn list_tenants(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    q: ApiQuery,
) -> ApiResult {
    let filter = tenants::TenantFilter {
        search: q.get("q").map(str::to_owned),
        owner: q.get("owner").map(str::to_owned),
    };
    Ok(collection(
        tenants::list(&state.control, &actor, &filter, &q.page()?).await?,
        |t| t.json(),
    ))
}

pub async fn create_tenant(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiJson(body): ApiJson<tenants::NewTenant>,
) -> ApiResult {
    Ok(created(tenant_json(
        &state,
        &tenants::create(&state.control, &actor, body).await?,
    )))
}

pub async fn get_tenant(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(Json(tenant_json(
        &state,
        &tenants::get(&state.control, &actor, &name).await?,
    ))
    .into_response())
}

pub async fn update_tenant(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<tenants::TenantPatch>,
) -> ApiResult {
    Ok(Json(tenant_json(
        &state,
        &tenants::update(&state.control, &actor, &name, body).await?,
    ))
    .into_response())
}

pub async fn delete_tenant(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(name): Path<String>,
) -> ApiResult {
    tenants::delete(&state.control, &actor, &name).await?;
    Ok(no_content())
}

pub async fn suspend_tenant(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(Json(tenant_json(
        &state,
        &tenants::set_suspended(&state.control, &actor, &name, true).await?,
    ))
    .into_response())
}

pub async fn unsuspend_tenant(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(Json(tenant_json(
        &state,
        &tenants::set_suspended(&state.control, &actor, &name, false).await?,
    ))
    .into_response())
}

pub async fn tenant_health(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(name): Path<String>,
) -> ApiResult {
    let (tenant, current, samples) = tenants::health(&state.control, &actor, &name).await?;
    Ok(Json(json!({
        "tenant": tenant.name,
        "health": current.map(|h| h.json()),
        "samples": samples.iter().map(|s| s.json()).collect::<Vec<_>>(),
    }))
    .into_response())
}

// ---- vhosts ----

pub async fn list_vhosts(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(name): Path<String>,
    q: ApiQuery,
) -> ApiResult {
    Ok(collection(
        vhosts::list(&state.control, &actor, &name, &q.page()?).await?,
        |v| v.json(),
    ))
}

pub async fn create_vhost(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<vhosts::VhostInput>,
) -> ApiResult {
    Ok(created(
        vhosts::create(&state.control, &actor, &name, body)
            .await?
            .json(),
    ))
}

pub async fn get_vhost(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(domain): Path<String>,
) -> ApiResult {
    Ok(Json(vhosts::get(&state.control, &actor, &domain).await?.json()).into_response())
}

pub async fn update_vhost(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(domain): Path<String>,
    ApiJson(body): ApiJson<vhosts::VhostInput>,
) -> ApiResult {
    Ok(Json(
        vhosts::update(&state.control, &actor, &domain, body)
            .await?
            .json(),
    )
    .into_response())
}

pub async fn delete_vhost(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(domain): Path<String>,
) -> ApiResult {
    vhosts::delete(&state.control, &actor, &domain).await?;
    Ok(no_content())
}

pub async fn vhost_access_log(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path((name, domain)): Path<(String, String)>,
    q: ApiQuery,
) -> ApiResult {
    // The dashboard's form leaves `lines` empty for the default; the API takes a number.
    let lines = q.integer("lines")?.map(|n| n.to_string());
    let request = access_log::TailRequest::parse(lines.as_deref(), q.get("q"))?;
    let log = access_log::tail(&state.control, &actor, &name, &domain, &request).await?;
    Ok(Json(json!({
        "tenant": log.tenant,
        "vhost": log.domain,
        "lines": log.tail.lines,
        "complete": log.tail.complete,
    }))
    .into_response())
}

// ---- audit ----

pub async fn list_audit(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    q: ApiQuery,
) -> ApiResult {
    let time = |key: &'static str| -> Result<Option<i64>, ApiError> {
        match q.get(key) {
            Some(raw) => crate::store::parse_time(raw).map(Some).ok_or_else(|| {
                ControlError::invalid(key, "must be an RFC 3339 time or Unix seconds").into()
            }),
            None => Ok(None),
        }
    };
    let filter = audit::AuditFilter {
        actor: q.get("actor").map(str::to_owned),
        target: q.get("target").map(str::to_owned),
        since: time("since")?,
        until: time("until")?,
    };
    Ok(collection(
        audit::list(&state.control, &actor, &filter, &q.page()?).await?,
        |r| r.json(),
    ))
}
