//! The SQLite store: desired state, credentials and the audit log.
//!
//! Two pools over one WAL-mode file: a single-connection writer, so writes queue in the
//! process instead of failing with SQLITE_BUSY, and a handful of readers that never wait on it.

pub(crate) mod agent;
pub(crate) mod audit;
pub(crate) mod rows;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::time::Duration;

pub use audit::AuditEntry;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Clone, Debug)]
pub struct Store {
    /// Readers: any number of concurrent queries.
    pub read: SqlitePool,
    /// The writer: one connection, so transactions run one after another.
    pub write: SqlitePool,
}

impl Store {
    /// Opens (creating if missing) the store at `path` and runs the embedded migrations.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-16000");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        // Foreign keys off while migrating (a table made again would otherwise take the rows
        // that refer to it with it when the old one is dropped), checked after. The writer is
        // one connection, so the pragmas and the migrations run on the same one.
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&write)
            .await?;
        MIGRATOR.run(&write).await.context("running migrations")?;
        sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&write)
            .await?;
        let broken: Vec<(String,)> =
            sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
                .fetch_all(&write)
                .await?;
        if !broken.is_empty() {
            anyhow::bail!(
                "the migrations left {} rows that refer to nothing",
                broken.len()
            );
        }
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.read_only(true))
            .await
            .context("opening read connections")?;
        Ok(Self { read, write })
    }

    /// Starts a write transaction. The writer pool has one connection, so this waits for
    /// any other write in progress instead of racing it.
    ///
    /// `BEGIN IMMEDIATE` takes the write lock up front: the agent writes to the same file from
    /// its own process, and a deferred transaction that read before writing would fail at once
    /// (SQLITE_BUSY_SNAPSHOT) instead of waiting out the busy timeout.
    pub async fn begin(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.write.begin_with("BEGIN IMMEDIATE").await
    }

    pub async fn generation(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT generation FROM state WHERE id = 1")
            .fetch_one(&self.read)
            .await
    }

    /// Quick consistency check for `lodge check`.
    pub async fn check(&self) -> anyhow::Result<String> {
        let result: String = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_one(&self.read)
            .await?;
        if result != "ok" {
            anyhow::bail!("integrity check failed: {result}");
        }
        let violations: Vec<(String,)> =
            sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
                .fetch_all(&self.read)
                .await?;
        if !violations.is_empty() {
            anyhow::bail!("{} foreign key violations", violations.len());
        }
        Ok(result)
    }
}

/// The agent's view of the store: read-only, and refusing a store reached through a link.
///
/// The store's directory belongs to the panel's user, who could put a link where the file
/// was. Root never writes there: it opens the file read-only, only once it is a regular file,
/// and checks on every connection that SQLite opened the file at exactly that path (SQLite
/// resolves links in a path before opening, so a link shows as another path). The agent's
/// own facts reach the store through the panel (`contract::report`).
#[derive(Clone, Debug)]
pub struct StoreReader {
    pub read: SqlitePool,
}

impl StoreReader {
    /// Opens the store the panel made; fails while it is missing or not yet migrated.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let dir = path.parent().context("the store has no directory")?;
        let name = path.file_name().context("the store has no file name")?;
        let expected = std::fs::canonicalize(dir)
            .with_context(|| format!("finding {}", dir.display()))?
            .join(name);
        let meta = std::fs::symlink_metadata(&expected)
            .with_context(|| format!("looking at {}", expected.display()))?;
        if !meta.file_type().is_file() {
            anyhow::bail!("{} is not a regular file", expected.display());
        }
        let options = SqliteConnectOptions::new()
            .filename(&expected)
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(10));
        let check = expected.clone();
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .after_connect(move |conn, _| {
                let check = check.clone();
                Box::pin(async move {
                    let opened: String = sqlx::query_scalar(
                        "SELECT file FROM pragma_database_list WHERE name = 'main'",
                    )
                    .fetch_one(&mut *conn)
                    .await?;
                    if std::path::Path::new(&opened) != check {
                        return Err(sqlx::Error::Configuration(
                            format!(
                                "the store opened as {opened}, not {}: a link stands in its place",
                                check.display()
                            )
                            .into(),
                        ));
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .with_context(|| format!("opening {} read-only", expected.display()))?;
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1")
                .fetch_one(&read)
                .await
                .context("reading the store's schema version")?;
        if applied.unwrap_or(0) < latest {
            anyhow::bail!("the store is not migrated yet");
        }
        Ok(Self { read })
    }

    pub async fn generation(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT generation FROM state WHERE id = 1")
            .fetch_one(&self.read)
            .await
    }
}

/// Bumps the desired-state generation inside `tx` and returns the new value.
pub async fn bump_generation(tx: &mut Transaction<'static, Sqlite>) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "UPDATE state SET generation = generation + 1 WHERE id = 1 RETURNING generation",
    )
    .fetch_one(&mut **tx)
    .await
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A timestamp as RFC 3339, for JSON and pages.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Parses an RFC 3339 time (or bare Unix seconds) from a query string.
pub fn parse_time(raw: &str) -> Option<i64> {
    if let Ok(n) = raw.parse::<i64>() {
        return Some(n);
    }
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// True when `e` is a UNIQUE or PRIMARY KEY violation: the name or domain is taken.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_agent_reads_the_store_only_at_its_own_path() {
        let dir = std::env::temp_dir().join(format!("lodge-reader-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lodge.db");
        // Missing: the panel has not made it yet.
        assert!(StoreReader::open(&path).await.is_err());
        let store = Store::open(&path).await.unwrap();
        let reader = StoreReader::open(&path).await.unwrap();
        assert_eq!(
            reader.generation().await.unwrap(),
            store.generation().await.unwrap()
        );
        // Read-only: the agent cannot write through it.
        assert!(sqlx::query("UPDATE state SET generation = 7")
            .execute(&reader.read)
            .await
            .is_err());
        // A link where the store should be is refused, whatever it points at.
        let other = dir.join("elsewhere");
        std::fs::create_dir_all(&other).unwrap();
        let link = other.join("lodge.db");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let refused = StoreReader::open(&link).await.unwrap_err();
        assert!(
            format!("{refused:#}").contains("not a regular file"),
            "{refused:#}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
