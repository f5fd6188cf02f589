//! A fresh database per test: see [`fl_db::testing`].

pub use fl_db::testing::TestDb;

/// Runs each named `async fn(&TestDb)` twice: `<name>::sqlite` and `<name>::postgres`.
macro_rules! on_both {
    ($($test:ident),* $(,)?) => { $(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = crate::support::TestDb::new(fl_db::Backend::Sqlite).await;
                super::$test(&db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = crate::support::TestDb::new(fl_db::Backend::Postgres).await;
                super::$test(&db).await;
            }
        }
    )* };
}
pub(crate) use on_both;
