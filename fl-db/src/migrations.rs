//! The schema migrations, embedded from `fl-db/migrations/` (one folder for both databases).

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// `(version, description, SQL)` of every file in `migrations/`, in order. A new migration is a
/// new file there and a new line here (a test checks that the two agree); an applied one is
/// never edited: sqlx refuses a database whose applied SQL has changed.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "gateway", include_str!("../migrations/0001_gateway.sql")),
    (2, "data", include_str!("../migrations/0002_data.sql")),
];

/// A migrator over [`MIGRATIONS`], recorded in sqlx's `_sqlx_migrations` table.
pub(crate) fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_the_folder_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS
            .iter()
            .map(|(version, description, _)| format!("{version:04}_{description}.sql"))
            .collect();
        assert_eq!(files, embedded);
        for (name, (_, _, sql)) in files.iter().zip(MIGRATIONS) {
            assert_eq!(std::fs::read_to_string(dir.join(name)).unwrap(), *sql);
        }
    }
}
