//! API tokens: made for an account, shown once, kept as a digest, listed and revoked by
//! their owner.

use super::{Control, ControlError};
use crate::domain::has_forbidden_char;
use crate::panel::auth::secret;
use crate::panel::policy::Actor;
use crate::store::rows::{TokenRow, UserRow};
use crate::store::{bump_generation, now, AuditEntry};
use serde_json::json;

/// Makes an API token for `user`; returns the token (its only appearance) and its id.
pub async fn issue(
    ctl: &Control,
    actor: &Actor,
    user: &UserRow,
    name: &str,
) -> Result<(String, i64), ControlError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 || has_forbidden_char(name).is_some() {
        return Err(ControlError::invalid(
            "name",
            "must be 1 to 64 printable characters",
        ));
    }
    let token = secret::new_api_token();
    let prefix = &token[..14];
    let mut tx = ctl.store.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO api_tokens (user_id, name, prefix, token_hash, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(user.id)
    .bind(name)
    .bind(prefix)
    .bind(secret::digest(&token))
    .bind(now())
    .fetch_one(&mut *tx)
    .await?;
    bump_generation(&mut tx).await?;
    AuditEntry::new(
        actor.audit(),
        "token.create",
        format!("user:{}", user.username),
    )
    .after(json!({"id": id, "name": name, "prefix": prefix}))
    .scope(None, user.tenant_id)
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok((token, id))
}

/// The account a bearer token belongs to, if the token is live. Marks it used.
pub async fn authenticate(ctl: &Control, token: &str) -> Result<Option<UserRow>, ControlError> {
    if !token.starts_with("lodge_") || token.len() != 46 {
        return Ok(None);
    }
    let digest = secret::digest(token);
    let found: Option<(i64, i64, Option<i64>)> =
        sqlx::query_as("SELECT id, user_id, last_used_at FROM api_tokens WHERE token_hash = ?")
            .bind(&digest)
            .fetch_optional(&ctl.store.read)
            .await?;
    let Some((token_id, user_id, last_used)) = found else {
        return Ok(None);
    };
    let t = now();
    // Recording use costs a write; once a minute is enough to show "last used".
    if last_used.is_none_or(|l| t - l >= 60) {
        sqlx::query("UPDATE api_tokens SET last_used_at = ? WHERE id = ?")
            .bind(t)
            .bind(token_id)
            .execute(&ctl.store.write)
            .await?;
    }
    let user = sqlx::query_as::<_, UserRow>(&format!("{} WHERE u.id = ?", UserRow::SELECT))
        .bind(user_id)
        .fetch_optional(&ctl.store.read)
        .await?;
    Ok(user)
}

pub async fn list(ctl: &Control, actor: &Actor) -> Result<Vec<TokenRow>, ControlError> {
    Ok(sqlx::query_as::<_, TokenRow>(
        "SELECT id, name, prefix, created_at, last_used_at FROM api_tokens WHERE user_id = ? ORDER BY id",
    )
    .bind(actor.user_id)
    .fetch_all(&ctl.store.read)
    .await?)
}

/// Revokes one of the actor's own tokens; anyone else's is "not found".
pub async fn revoke(ctl: &Control, actor: &Actor, id: i64) -> Result<(), ControlError> {
    let mut tx = ctl.store.begin().await?;
    let row: Option<TokenRow> = sqlx::query_as(
        "DELETE FROM api_tokens WHERE id = ? AND user_id = ? RETURNING id, name, prefix, created_at, last_used_at",
    )
    .bind(id)
    .bind(actor.user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or(ControlError::NotFound("token"))?;
    bump_generation(&mut tx).await?;
    AuditEntry::new(
        actor.audit(),
        "token.revoke",
        format!("user:{}", actor.username),
    )
    .before(row.json())
    .scope(None, actor.tenant_id)
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
