//! Throwaway databases for tests of code built on this crate: a SQLite file in a temporary
//! directory, or a PostgreSQL database on a server this module starts (`initdb` and
//! `postgres` from the Debian `postgresql` package, on a loopback port, as user `postgres`
//! when run as root, stopped by PID when dropped) or on `DAOFL_TEST_POSTGRES_URL`'s server.
//!
//! ```no_run
//! # async fn demo() {
//! use fl_db::{Backend, Store, testing::TestDb};
//! let db = TestDb::new(Backend::Postgres).await; // fails (panics) without PostgreSQL
//! let store = Store::open(&db.url).await.unwrap();
//! # }
//! ```

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor};
use tempfile::TempDir;

use crate::Backend;

/// Names the PostgreSQL server the tests use instead of starting their own; each test creates
/// (and drops) a database of its own there.
pub const POSTGRES_URL_VAR: &str = "DAOFL_TEST_POSTGRES_URL";

/// How long a throwaway server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// An empty database of one backend, removed when dropped.
pub struct TestDb {
    /// The URL to open it with.
    pub url: String,
    backend: Backend,
    _holder: Holder,
}

#[allow(dead_code)] // held for their `Drop`
enum Holder {
    Sqlite(TempDir),
    Server(PgServer),
    External(ExternalDb),
}

impl TestDb {
    /// A fresh database on `backend`. Panics (fails the test) if none can be had: for
    /// PostgreSQL, when neither `DAOFL_TEST_POSTGRES_URL` is set nor the server binaries are
    /// installed.
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("gw.db").display());
                TestDb {
                    url,
                    backend,
                    _holder: Holder::Sqlite(dir),
                }
            }
            Backend::Postgres => match std::env::var(POSTGRES_URL_VAR) {
                Ok(server) if !server.is_empty() => {
                    let db = ExternalDb::create(&server).await;
                    TestDb {
                        url: db.url.clone(),
                        backend,
                        _holder: Holder::External(db),
                    }
                }
                _ => {
                    let mut server = PgServer::start().unwrap_or_else(|e| panic!("{e}"));
                    let url = server.create_database("daofl").await;
                    TestDb {
                        url,
                        backend,
                        _holder: Holder::Server(server),
                    }
                }
            },
        }
    }

    /// Which backend it is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A plain sqlx pool on it, for what the store's API does not do (corrupting a row).
    pub async fn raw(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.url)
            .await
            .expect("raw connection")
    }
}

/// A PostgreSQL server in a temporary directory, on a free loopback port, killed (by PID) and
/// removed when dropped. It also dies with the thread that started it (`setpriv --pdeathsig`),
/// so a test binary killed outright leaves no server behind.
pub struct PgServer {
    child: Child,
    port: u16,
    log: PathBuf,
    // Dropped after the server is stopped (fields drop in order, after `Drop::drop`).
    _dir: TempDir,
}

impl PgServer {
    /// Runs `initdb` and starts `postgres`; waits until it accepts connections.
    pub fn start() -> Result<PgServer, String> {
        let bin = postgres_bin_dir().ok_or_else(|| {
            format!(
                "the PostgreSQL tests need a PostgreSQL server: no initdb and postgres under \
                 /usr/lib/postgresql/*/bin or on PATH. Install it (Debian/Ubuntu: \
                 `apt-get install postgresql`), or set {POSTGRES_URL_VAR} to a server's URL"
            )
        })?;
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let owner = server_user()?;
        if let Some((uid, gid)) = owner {
            // PostgreSQL refuses to run as root: the server's files belong to an unprivileged
            // user, who runs it.
            run(Command::new("chown")
                .arg(format!("{uid}:{gid}"))
                .arg(dir.path()))?;
        }
        let data = dir.path().join("data");
        run(as_server_user(owner, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ]))?;
        let port = free_port()?;
        let log = dir.path().join("postgres.log");
        let log_file = std::fs::File::create(&log).map_err(|e| format!("server log: {e}"))?;
        let child = as_server_user(owner, &bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.join("postgres").display()))?;
        Ok(PgServer {
            child,
            port,
            log,
            _dir: dir,
        })
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Waits until the server accepts connections, then creates `database`; its URL.
    async fn create_database(&mut self, database: &str) -> String {
        let admin = self.url("postgres");
        let start = Instant::now();
        sqlx::any::install_default_drivers();
        let mut conn = loop {
            match sqlx::AnyConnection::connect(&admin).await {
                Ok(conn) => break conn,
                Err(e) => {
                    let exited = self.child.try_wait().ok().flatten();
                    if exited.is_some() || start.elapsed() > START_TIMEOUT {
                        panic!(
                            "PostgreSQL on port {} did not start ({e}); its log:\n{}",
                            self.port,
                            std::fs::read_to_string(&self.log).unwrap_or_default()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .await
            .expect("CREATE DATABASE");
        conn.close().await.ok();
        self.url(database)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Fast shutdown (SIGINT), then SIGKILL if it takes more than 5 s.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database created on the `DAOFL_TEST_POSTGRES_URL` server, dropped with it.
pub struct ExternalDb {
    admin: String,
    name: String,
    url: String,
}

impl ExternalDb {
    async fn create(server: &str) -> ExternalDb {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "daofl_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(server)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR}: cannot connect: {e}"));
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR}: CREATE DATABASE {name}: {e}"));
        conn.close().await.ok();
        ExternalDb {
            admin: server.to_owned(),
            url: with_database(server, &name),
            name,
        }
    }
}

impl Drop for ExternalDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // A runtime of its own: drop may run inside or outside the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut conn = sqlx::AnyConnection::connect(&admin).await?;
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await?;
                conn.close().await
            })
            .map_err(std::io::Error::other)
        })
        .join();
    }
}

/// `url` naming database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{name}{query}")
}

/// The directory holding `initdb` and `postgres`: the newest under /usr/lib/postgresql (Debian,
/// Ubuntu), else the one on PATH.
fn postgres_bin_dir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_server(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| has_server(dir))
}

/// `None` when not root; as root, the (uid, gid) of `postgres` (Debian's package makes it)
/// or else `nobody`.
fn server_user() -> Result<Option<(u32, u32)>, String> {
    let uid = std::fs::metadata("/proc/self")
        .map_err(|e| format!("/proc/self: {e}"))?
        .uid();
    if uid != 0 {
        return Ok(None);
    }
    for user in ["postgres", "nobody"] {
        let id = |flag| {
            let out = Command::new("id").args([flag, user]).output().ok()?;
            String::from_utf8(out.stdout)
                .ok()?
                .trim()
                .parse::<u32>()
                .ok()
        };
        if let (Some(uid), Some(gid)) = (id("-u"), id("-g")) {
            return Ok(Some((uid, gid)));
        }
    }
    Err("running as root, and neither user postgres nor nobody exists to run PostgreSQL".into())
}

/// `program` run through `setpriv`: as `owner` when given, and killed when the spawning
/// thread dies.
fn as_server_user(owner: Option<(u32, u32)>, program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    if let Some((uid, gid)) = owner {
        command
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--init-groups");
    }
    command.args(["--pdeathsig", "KILL", "--"]).arg(program);
    command
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

#[cfg(test)]
#[test]
fn database_names_replace_the_urls() {
    assert_eq!(
        with_database("postgres://u:p@h:5/postgres?sslmode=disable", "t1"),
        "postgres://u:p@h:5/t1?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
}
