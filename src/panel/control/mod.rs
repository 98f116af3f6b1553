//! The control plane's operations: everything a person or a script does to the desired
//! state, shared by the REST API, the dashboard and the command line.
//!
//! Each operation takes raw input, parses it into checked types, asks `policy` whether the
//! actor may act, and writes one transaction: the change, the generation bump and the audit
//! entry together.

pub mod access_log;
pub mod audit;
pub mod plans;
pub mod tenants;
pub mod tokens;
pub mod users;
pub mod vhosts;

use crate::config::Config;
use crate::domain::FieldError;
use crate::store::Store;
use std::sync::Arc;

/// What the operations need: the store and the settings.
#[derive(Clone)]
pub struct Control {
    pub store: Store,
    pub config: Arc<Config>,
}

/// Why an operation did not happen. The API turns it into a problem document, the
/// dashboard into a page or an inline error.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    LimitExceeded {
        limit: &'static str,
        message: String,
    },
    #[error("{message}")]
    Conflict {
        field: &'static str,
        message: String,
    },
    /// Input that is malformed whatever the state: the API answers 422.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// Well-formed input the current state refuses (a plan that does not exist, a value above
    /// the tenant's plan): the API answers 409, naming each field.
    #[error("refused input")]
    Refused(Vec<FieldError>),
    #[error("{0}")]
    Unauthorized(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::panel::policy::Denied> for ControlError {
    fn from(e: crate::panel::policy::Denied) -> Self {
        ControlError::Forbidden(e.0)
    }
}

impl From<sqlx::Error> for ControlError {
    fn from(e: sqlx::Error) -> Self {
        ControlError::Internal(e.into())
    }
}

impl ControlError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ControlError::Invalid(vec![FieldError::new(field, message)])
    }

    pub fn refused(field: &str, message: impl Into<String>) -> Self {
        ControlError::Refused(vec![FieldError::new(field, message)])
    }
}

/// Maps a UNIQUE violation to 409 on `field`, anything else to an internal error.
pub(crate) fn on_unique(
    field: &'static str,
    message: String,
) -> impl FnOnce(sqlx::Error) -> ControlError {
    move |e| {
        if crate::store::is_unique_violation(&e) {
            ControlError::Conflict { field, message }
        } else {
            e.into()
        }
    }
}

/// A page of a collection: `?limit=` (1..=500, default 50) and `?after=` (the last key seen).
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: i64,
    pub after: Option<String>,
}

impl PageRequest {
    pub fn new(limit: Option<i64>, after: Option<String>) -> Result<Self, ControlError> {
        let limit = limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(ControlError::invalid("limit", "must be between 1 and 500"));
        }
        // Characters, as the API's document can state them.
        if after.as_ref().is_some_and(|a| a.chars().count() > 300) {
            return Err(ControlError::invalid(
                "after",
                "is not a cursor lodge gave out",
            ));
        }
        Ok(Self { limit, after })
    }

    /// The query fetches one more than asked, to know whether a next page exists.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }
}

/// Items of one page and the cursor to the next.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Cuts the extra row `PageRequest::fetch` asked for and derives the cursor from the last item kept.
    pub fn from_rows(mut rows: Vec<T>, request: &PageRequest, key: impl Fn(&T) -> String) -> Self {
        let more = rows.len() as i64 > request.limit;
        rows.truncate(request.limit as usize);
        let next = if more { rows.last().map(key) } else { None };
        Self { items: rows, next }
    }
}
