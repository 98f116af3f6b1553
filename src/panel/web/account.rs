//! The overview, the account page (password, two-factor sign-in) and API tokens.

use super::forms::{form_errors, CsrfForm, Errors};
use super::{done, form_again, page, when, Chrome, DoneQuery, WebResult, WebUser};
use crate::domain::Role;
use crate::panel::auth::totp;
use crate::panel::control::{audit, tenants, tokens, users, PageRequest};
use crate::panel::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(overview))
        .route("/account", get(account))
        .route("/account/password", post(change_password))
        .route("/account/totp", post(enable_totp))
        .route("/account/totp/disable", post(disable_totp))
        .route("/tokens", get(tokens_page).post(create_token))
        .route("/tokens/{id}/revoke", post(revoke_token))
}

/// A usage meter: label, used, allowed (`None`: no limit).
pub struct Usage {
    pub label: &'static str,
    pub used: i64,
    pub max: Option<i64>,
}

impl Usage {
    pub fn level(&self) -> &'static str {
        match self.max {
            Some(max) if max > 0 && self.used * 100 >= max * 90 => "danger",
            Some(max) if max > 0 && self.used * 100 >= max * 70 => "warn",
            _ => "",
        }
    }

    pub fn max_text(&self) -> String {
        self.max
            .map(|m| m.to_string())
            .unwrap_or_else(|| "∞".into())
    }

    /// The meter's scale: the limit, or the usage itself when there is none.
    pub fn scale(&self) -> i64 {
        self.max.unwrap_or(self.used).max(1)
    }
}

pub struct Activity {
    pub text: String,
    pub when: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    counts: tenants::Counts,
    usage: Vec<Usage>,
    activity: Vec<Activity>,
    tenant_name: Option<String>,
}

async fn overview(State(state): State<AppState>, user: WebUser) -> WebResult {
    let ctl = &state.control;
    let counts = tenants::counts(ctl, &user.actor).await?;
    let mut usage = Vec::new();
    let mut tenant_name = None;
    match user.actor.role {
        Role::Reseller => {
            usage.push(Usage {
                label: "Tenants",
                used: counts.tenants,
                max: user.user.max_tenants,
            });
            usage.push(Usage {
                label: "Vhosts",
                used: counts.vhosts,
                max: user.user.max_vhosts,
            });
            usage.push(Usage {
                label: "PHP workers",
                used: counts.php_workers,
                max: user.user.max_php_workers,
            });
        }
        Role::Tenant => {
            if let Some(name) = &user.user.tenant {
                let t = tenants::get(ctl, &user.actor, name).await?;
                let plan = crate::panel::control::plans::get(ctl, &user.actor, &t.plan).await?;
                usage.push(Usage {
                    label: "Vhosts",
                    used: t.vhost_count,
                    max: Some(plan.limits.max_vhosts),
                });
                usage.push(Usage {
                    label: "PHP workers",
                    used: plan.limits.php_max_children,
                    max: Some(plan.limits.php_max_children),
                });
                tenant_name = Some(t.name);
            }
        }
        Role::Admin => {}
    }
    let recent = audit::list(
        ctl,
        &user.actor,
        &audit::AuditFilter::default(),
        &PageRequest::new(Some(8), None)?,
    )
    .await?;
    let activity = recent
        .items
        .iter()
        .map(|r| Activity {
            text: format!("{} — {} {}", r.actor, r.action.replace('.', " "), r.target),
            when: when(r.at),
        })
        .collect();
    page(OverviewPage {
        chrome: Chrome::new(&user, "overview"),
        counts,
        usage,
        activity,
        tenant_name,
    })
}

// ---- account ----

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    totp_on: bool,
    /// A fresh secret to enrol, while two-factor sign-in is off.
    new_secret: String,
    new_uri: String,
    errors: Errors,
    created: String,
}

fn account_page(
    user: &WebUser,
    notice: Option<&str>,
    errors: Errors,
    secret: Option<String>,
) -> AccountPage {
    let new_secret = secret.unwrap_or_else(totp::new_secret);
    AccountPage {
        chrome: Chrome::new(user, "account").with_notice(notice),
        totp_on: user.user.totp_secret.is_some(),
        new_uri: totp::uri(&new_secret, &user.user.username),
        new_secret,
        errors,
        created: when(user.user.created_at),
    }
}

async fn account(user: WebUser, Query(q): Query<DoneQuery>) -> WebResult {
    page(account_page(
        &user,
        q.done.as_deref(),
        Errors::default(),
        None,
    ))
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    user: WebUser,
    CsrfForm(form): CsrfForm<PasswordForm>,
) -> WebResult {
    if form.new_password != form.confirm_password {
        let errors = Errors {
            list: vec![crate::domain::FieldError::new(
                "confirm_password",
                "does not match the new password",
            )],
            general: None,
        };
        return form_again(
            StatusCode::UNPROCESSABLE_ENTITY,
            account_page(&user, None, errors, None),
        );
    }
    let patch = users::UserPatch {
        password: Some(form.new_password),
        current_password: Some(form.current_password),
        limits: None,
    };
    match users::update(&state.control, &user.actor, &user.actor.username, patch).await {
        Ok(_) => done("/account", "password"),
        Err(e) => {
            let (status, errors) = form_errors(e)?;
            form_again(status, account_page(&user, None, errors, None))
        }
    }
}

#[derive(Deserialize)]
struct TotpForm {
    #[serde(default)]
    secret: String,
    #[serde(default)]
    code: String,
}

async fn enable_totp(
    State(state): State<AppState>,
    user: WebUser,
    CsrfForm(form): CsrfForm<TotpForm>,
) -> WebResult {
    let change = users::TotpChange::On {
        secret: &form.secret,
        code: &form.code,
    };
    match users::set_totp(&state.control, &user.actor, change).await {
        Ok(()) => done("/account", "totp-on"),
        Err(e) => {
            let (status, errors) = form_errors(e)?;
            // Keep the secret the person already scanned, if it is one lodge could have made.
            let secret = totp::is_secret(&form.secret).then_some(form.secret);
            form_again(status, account_page(&user, None, errors, secret))
        }
    }
}

async fn disable_totp(
    State(state): State<AppState>,
    user: WebUser,
    CsrfForm(form): CsrfForm<TotpForm>,
) -> WebResult {
    // Turning the second factor off takes a current code, so a stolen session alone cannot.
    let change = users::TotpChange::Off { code: &form.code };
    if let Err(e) = users::set_totp(&state.control, &user.actor, change).await {
        let (status, mut errors) = form_errors(e)?;
        for e in &mut errors.list {
            if e.field == "code" {
                e.field = "disable_code".into();
            }
        }
        return form_again(status, account_page(&user, None, errors, None));
    }
    done("/account", "totp-off")
}

// ---- API tokens ----

pub struct TokenLine {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub created: String,
    pub last_used: String,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    chrome: Chrome,
    tokens: Vec<TokenLine>,
    new_token: Option<String>,
    errors: Errors,
    name: String,
}

async fn tokens_page_with(
    state: &AppState,
    user: &WebUser,
    notice: Option<&str>,
    new_token: Option<String>,
    errors: Errors,
    name: String,
) -> Result<TokensPage, super::WebError> {
    let rows = tokens::list(&state.control, &user.actor).await?;
    Ok(TokensPage {
        chrome: Chrome::new(user, "tokens").with_notice(notice),
        tokens: rows
            .iter()
            .map(|t| TokenLine {
                id: t.id,
                name: t.name.clone(),
                prefix: t.prefix.clone(),
                created: when(t.created_at),
                last_used: t.last_used_at.map(when).unwrap_or_else(|| "never".into()),
            })
            .collect(),
        new_token,
        errors,
        name,
    })
}

async fn tokens_page(
    State(state): State<AppState>,
    user: WebUser,
    Query(q): Query<DoneQuery>,
) -> WebResult {
    page(
        tokens_page_with(
            &state,
            &user,
            q.done.as_deref(),
            None,
            Errors::default(),
            String::new(),
        )
        .await?,
    )
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    name: String,
}

async fn create_token(
    State(state): State<AppState>,
    user: WebUser,
    CsrfForm(form): CsrfForm<TokenForm>,
) -> WebResult {
    match tokens::issue(&state.control, &user.actor, &user.user, &form.name).await {
        // Shown on this response only: a reload does not show it again.
        Ok((token, _)) => page(
            tokens_page_with(
                &state,
                &user,
                None,
                Some(token),
                Errors::default(),
                String::new(),
            )
            .await?,
        ),
        Err(e) => {
            let (status, errors) = form_errors(e)?;
            form_again(
                status,
                tokens_page_with(
                    &state,
                    &user,
                    None,
                    None,
                    errors,
                    super::forms::echo(&form.name),
                )
                .await?,
            )
        }
    }
}

async fn revoke_token(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    _: CsrfForm<super::session::Empty>,
) -> WebResult {
    let id: i64 = id
        .parse()
        .map_err(|_| crate::panel::control::ControlError::NotFound("token"))?;
    tokens::revoke(&state.control, &user.actor, id).await?;
    done("/tokens", "revoked")
}
