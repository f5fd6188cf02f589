//! Opening a database: URL, pool, migrations.

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::{DbError, migrations};

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// SQLite, embedded (a file, or memory).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend a URL names: `sqlite:...`, `postgres://...` or `postgresql://...`.
    pub fn of_url(url: &str) -> Option<Backend> {
        let (scheme, _) = url.split_once(':')?;
        match scheme {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            _ => None,
        }
    }
}

/// How [`Store::open_with`] connects.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most connections the pool holds (an in-memory SQLite store always has one).
    pub max_connections: u32,
    /// How long opening the store, or any call waiting for a connection, may wait before it
    /// fails (an unreachable server fails within this).
    pub connect_timeout: Duration,
}

impl Default for StoreOptions {
    /// Eight connections, a 10 s timeout.
    fn default() -> Self {
        StoreOptions {
            max_connections: 8,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The database: a bounded connection pool on a migrated schema. Cheap to clone (clones share
/// the pool).
///
/// The gateway's calls are grouped by table in [`crate::gateway`].
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
    url: String,
}

impl Store {
    /// Opens the database at `url` with [`StoreOptions::default`] and brings its schema up to
    /// date; see [`Store::open_with`].
    pub async fn open(url: &str) -> Result<Store, DbError> {
        Store::open_with(url, &StoreOptions::default()).await
    }

    /// Opens the database at `url` and applies the migrations it lacks (opening twice, or from
    /// two processes, is fine).
    ///
    /// `url` is one of
    /// - `sqlite://path/to/file.db?mode=rwc` (`mode=rwc` creates the file; without it the
    ///   file must exist), switched to write-ahead logging;
    /// - `sqlite::memory:`, a private database that lives as long as this store (one
    ///   connection);
    /// - `postgres://user:password@host:port/database`.
    pub async fn open_with(url: &str, options: &StoreOptions) -> Result<Store, DbError> {
        sqlx::any::install_default_drivers();
        let shown = redact(url);
        let open_error = |source| DbError::Open {
            url: shown.clone(),
            source,
        };
        let backend = Backend::of_url(url).ok_or_else(|| {
            open_error(sqlx::Error::Configuration(
                "unsupported URL scheme: fl-db opens sqlite: and postgres:// URLs".into(),
            ))
        })?;
        let in_memory =
            backend == Backend::Sqlite && (url.contains(":memory:") || url.contains("mode=memory"));
        let mut pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.connect_timeout);
        if in_memory {
            // Under sqlx's `Any` driver every new connection to `sqlite::memory:` is a new,
            // empty database: keep exactly one, forever.
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = match pool.connect(url).await {
            Ok(pool) => pool,
            Err(sqlx::Error::PoolTimedOut) => {
                return Err(unreachable(url, shown, options.connect_timeout).await);
            }
            Err(e) => return Err(open_error(e)),
        };
        if backend == Backend::Sqlite && !in_memory {
            // Readers do not block the writer; persistent in the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(open_error)?;
        }
        migrations::migrator()
            .run(&pool)
            .await
            .map_err(|source| DbError::Migrate {
                url: shown.clone(),
                source,
            })?;
        Ok(Store {
            pool,
            backend,
            url: shown,
        })
    }

    /// The backend this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL it was opened with, password replaced by `***`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes every connection (waiting for calls in flight). Committed writes are durable
    /// whether or not a store is closed; this only releases the connections now.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The error for a server that did not answer within `waited`: sqlx retries a refused
/// connection until its timeout and then only says it timed out, so one more short attempt
/// finds out why.
async fn unreachable(url: &str, shown: String, waited: Duration) -> DbError {
    use sqlx::Connection;
    let last_try = Duration::from_secs(1).min(waited);
    let last = match tokio::time::timeout(last_try, sqlx::AnyConnection::connect(url)).await {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            "it answered only after the timeout".to_owned()
        }
        Err(_) => format!("no answer within {last_try:?}"),
    };
    DbError::Unreachable {
        url: shown,
        waited,
        last,
    }
}

/// `url` with the password of its user info replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://gw:s3cr:et@db.example:5432/daofl?sslmode=disable"),
            "postgres://gw:***@db.example:5432/daofl?sslmode=disable"
        );
        assert_eq!(redact("postgres://gw@db/daofl"), "postgres://gw@db/daofl");
        assert_eq!(
            redact("postgres://db/daofl?user=a@b"),
            "postgres://db/daofl?user=a@b"
        );
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(
            redact("sqlite:///var/lib/gw.db?mode=rwc"),
            "sqlite:///var/lib/gw.db?mode=rwc"
        );
    }

    #[test]
    fn backends_by_scheme() {
        assert_eq!(Backend::of_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("postgresql://h/d"), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("mysql://h/d"), None);
        assert_eq!(Backend::of_url("no scheme"), None);
    }
}
