//! Moving a deployment's metadata from SQLite to PostgreSQL (`warren admin migrate-db`): every
//! table copied row for row in one target transaction, then counted on both sides. Objects stay
//! where they are; only the database changes.

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{Postgres, Row};

use super::{Error, MetaStore, Result, postgres::PgStore, sqlite::SqliteStore};

/// How a column's SQLite value becomes its PostgreSQL one.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    /// 32-bit in PostgreSQL (statuses, attempts).
    Int4,
    Blob,
    /// SQLite's 0/1.
    Bool,
    /// JSON text into `jsonb`.
    Json,
    /// A JSON array of strings into `text[]`.
    JsonTextArray,
}

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// An identity column whose values are copied as they are, and its sequence moved past.
    identity: Option<&'static str>,
}

use Kind::*;

/// In foreign-key order.
const TABLES: &[Table] = &[
    Table {
        name: "settings",
        columns: &[("name", Text), ("value", Text)],
        identity: None,
    },
    Table {
        name: "workspaces",
        columns: &[("id", Text), ("name", Text), ("created_at", Int)],
        identity: None,
    },
    Table {
        name: "api_keys",
        columns: &[
            ("id", Text),
            ("workspace_id", Text),
            ("name", Text),
            ("prefix", Text),
            ("hash", Blob),
            ("scope", Text),
            ("namespace", Text),
            ("created_at", Int),
            ("last_used_at", Int),
            ("revoked_at", Int),
            ("bootstrap", Bool),
        ],
        identity: None,
    },
    Table {
        name: "namespaces",
        columns: &[
            ("workspace_id", Text),
            ("name", Text),
            ("generation", Int),
            ("created_at", Int),
            ("state", Text),
            ("deleted_at", Int),
            ("purged_at", Int),
            ("purge_objects", Int),
            ("purge_bytes", Int),
            ("purge_snapshots", Int),
            ("journal_floor", Int),
        ],
        identity: None,
    },
    Table {
        name: "files",
        columns: &[
            ("workspace_id", Text),
            ("namespace", Text),
            ("path", Text),
            ("parent", Text),
            ("name", Text),
            ("kind", Text),
            ("size", Int),
            ("mode", Int),
            ("mtime", Int),
            ("sha256", Text),
            ("target", Text),
            ("generation", Int),
        ],
        identity: None,
    },
    Table {
        name: "tree_tombstones",
        columns: &[
            ("workspace_id", Text),
            ("namespace", Text),
            ("path", Text),
            ("generation", Int),
            ("deleted_at", Int),
        ],
        identity: None,
    },
    // SQLite's `seq` is in commit order across workspaces, so it serves as each workspace's
    // position too (positions need only increase; the head starts past the last one).
    Table {
        name: "events",
        columns: &[
            ("seq", Int),
            ("id", Text),
            ("type", Text),
            ("workspace_id", Text),
            ("namespace", Text),
            ("key_id", Text),
            ("created_at", Int),
            ("data", Json),
        ],
        identity: Some("seq"),
    },
    Table {
        name: "webhooks",
        columns: &[
            ("id", Text),
            ("workspace_id", Text),
            ("url", Text),
            ("events", JsonTextArray),
            ("namespace", Text),
            ("description", Text),
            ("secret", Text),
            ("enabled", Bool),
            ("created_at", Int),
            ("deleted_at", Int),
            ("last_delivery_at", Int),
            ("last_delivery_ok", Bool),
            ("last_delivery_status", Int4),
        ],
        identity: None,
    },
    Table {
        name: "deliveries",
        columns: &[
            ("id", Int),
            ("webhook_id", Text),
            ("event_seq", Int),
            ("state", Text),
            ("attempts", Int4),
            ("next_attempt_at", Int),
            ("locked_until", Int),
            ("last_status", Int4),
            ("last_error", Text),
            ("updated_at", Int),
            ("lease_token", Text),
        ],
        identity: Some("id"),
    },
    Table {
        name: "audit",
        columns: &[
            ("seq", Int),
            ("workspace_id", Text),
            ("key_id", Text),
            ("namespace", Text),
            ("operation", Text),
            ("path", Text),
            ("status", Int4),
            ("created_at", Int),
        ],
        identity: Some("seq"),
    },
    Table {
        name: "snapshots",
        columns: &[
            ("id", Text),
            ("workspace_id", Text),
            ("namespace", Text),
            ("label", Text),
            ("size_bytes", Int),
            ("file_count", Int),
            ("key_id", Text),
            ("created_at", Int),
            ("expires_at", Int),
        ],
        identity: None,
    },
];

/// Rows per insert statement.
const CHUNK: usize = 2000;

/// One table's rows on each side after the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub table: &'static str,
    pub source: u64,
    pub target: u64,
}

/// A column's values for one chunk, as the array PostgreSQL's `unnest` takes.
enum Values {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
    Int4(Vec<Option<i32>>),
    Blob(Vec<Option<Vec<u8>>>),
    Bool(Vec<Option<bool>>),
}

impl Values {
    fn read(kind: Kind, rows: &[SqliteRow], col: &str) -> Result<Self> {
        let get_int = |r: &SqliteRow| r.try_get::<Option<i64>, _>(col);
        Ok(match kind {
            Text | Json | JsonTextArray => Values::Text(
                rows.iter()
                    .map(|r| r.try_get::<Option<String>, _>(col))
                    .collect::<Result<_, _>>()?,
            ),
            Int => Values::Int(rows.iter().map(get_int).collect::<Result<_, _>>()?),
            Int4 => Values::Int4(
                rows.iter()
                    .map(|r| Ok(get_int(r)?.map(|v| v as i32)))
                    .collect::<Result<_, sqlx::Error>>()?,
            ),
            Bool => Values::Bool(
                rows.iter()
                    .map(|r| Ok(get_int(r)?.map(|v| v != 0)))
                    .collect::<Result<_, sqlx::Error>>()?,
            ),
            Blob => Values::Blob(
                rows.iter()
                    .map(|r| r.try_get::<Option<Vec<u8>>, _>(col))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        match self {
            Values::Text(v) => q.bind(v),
            Values::Int(v) => q.bind(v),
            Values::Int4(v) => q.bind(v),
            Values::Blob(v) => q.bind(v),
            Values::Bool(v) => q.bind(v),
        }
    }
}

fn array_type(kind: Kind) -> &'static str {
    match kind {
        Text | Json | JsonTextArray => "text[]",
        Int => "bigint[]",
        Int4 => "integer[]",
        Blob => "bytea[]",
        Bool => "boolean[]",
    }
}

/// How the unnested value becomes the column's.
fn value_expr(kind: Kind, i: usize) -> String {
    match kind {
        Json => format!("c{i}::jsonb"),
        JsonTextArray => {
            format!("ARRAY(SELECT jsonb_array_elements_text(c{i}::jsonb))")
        }
        _ => format!("c{i}"),
    }
}

/// Copies every table of the SQLite database at `from` into the PostgreSQL database at `to`
/// (both migrated to the current schema first). Refuses a target that holds any row unless
/// `replace`, which empties it first. Returns each table's row counts on both sides; a count
/// that differs is an error.
pub async fn sqlite_to_postgres(from: &str, to: &str, replace: bool) -> Result<Vec<Copied>> {
    if !from.starts_with("sqlite:") || !to.starts_with("postgres") {
        return Err(Error::UnsupportedUrl(format!(
            "{from} -> {to}: copies from sqlite:// to postgres:// only"
        )));
    }
    // Brings the source's schema up to date, as a server start would.
    SqliteStore::open(from).await?.close().await;
    let source = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(from.parse::<SqliteConnectOptions>()?.read_only(true))
        .await?;
    let target = PgStore::open(to).await?;
    let mut tx = target.pool().begin().await?;
    let mut held = Vec::new();
    for t in TABLES.iter().chain(std::iter::once(&HEADS)) {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", t.name))
            .fetch_one(&mut *tx)
            .await?;
        if n > 0 {
            held.push(format!("{} ({n} rows)", t.name));
        }
    }
    if !held.is_empty() {
        if !replace {
            return Err(Error::Conflict(format!(
                "the target database is not empty: {}; pass --replace to empty it first",
                held.join(", ")
            )));
        }
        let names: Vec<&str> = TABLES.iter().map(|t| t.name).chain([HEADS.name]).collect();
        sqlx::query(&format!("TRUNCATE {} CASCADE", names.join(", ")))
            .execute(&mut *tx)
            .await?;
    }

    for t in TABLES {
        copy_table(&source, &mut tx, t).await?;
    }
    // Each workspace's log head starts past its last event.
    sqlx::query(
        "INSERT INTO event_heads (workspace_id, pos, at)
         SELECT workspace_id, MAX(pos), MAX(created_at) FROM events GROUP BY workspace_id",
    )
    .execute(&mut *tx)
    .await?;

    let mut counts = Vec::new();
    for t in TABLES {
        let source: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", t.name))
            .fetch_one(&source)
            .await?;
        let target: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", t.name))
            .fetch_one(&mut *tx)
            .await?;
        counts.push(Copied {
            table: t.name,
            source: source as u64,
            target: target as u64,
        });
    }
    if let Some(c) = counts.iter().find(|c| c.source != c.target) {
        return Err(Error::Corrupt(format!(
            "{}: {} rows in the source, {} copied; nothing was committed",
            c.table, c.source, c.target
        )));
    }
    tx.commit().await?;
    source.close().await;
    target.close().await;
    Ok(counts)
}

/// Not copied but derived, and so only emptied.
const HEADS: Table = Table {
    name: "event_heads",
    columns: &[],
    identity: None,
};

async fn copy_table(
    source: &sqlx::SqlitePool,
    tx: &mut sqlx::Transaction<'static, Postgres>,
    t: &Table,
) -> Result<()> {
    let names: Vec<&str> = t.columns.iter().map(|(n, _)| *n).collect();
    let rows = sqlx::query(&format!("SELECT {} FROM {}", names.join(", "), t.name))
        .fetch_all(source)
        .await?;
    let mut target_columns = names.clone();
    let mut exprs: Vec<String> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, k))| value_expr(*k, i))
        .collect();
    if t.name == "events" {
        // The position within the workspace's log: see the events table above.
        target_columns.push("pos");
        exprs.push("c0".into());
    }
    let unnest: Vec<String> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, k))| format!("${}::{}", i + 1, array_type(*k)))
        .collect();
    let aliases: Vec<String> = (0..t.columns.len()).map(|i| format!("c{i}")).collect();
    let overriding = if t.identity.is_some() {
        "OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO {} ({}) {overriding} SELECT {} FROM unnest({}) AS u ({})",
        t.name,
        target_columns.join(", "),
        exprs.join(", "),
        unnest.join(", "),
        aliases.join(", ")
    );
    for chunk in rows.chunks(CHUNK) {
        let mut q = sqlx::query(&sql);
        for (name, kind) in t.columns {
            q = Values::read(*kind, chunk, name)?.bind(q);
        }
        q.execute(&mut **tx).await?;
    }
    if let Some(col) = t.identity {
        sqlx::query(&format!(
            "SELECT setval(pg_get_serial_sequence('{0}', '{col}'),
                           COALESCE((SELECT MAX({col}) FROM {0}), 0) + 1, false)",
            t.name
        ))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[cfg(all(test, feature = "pg-tests"))]
mod tests {
    use std::collections::BTreeSet;

    use sqlx::{Connection, Executor};

    use super::*;

    /// Columns only PostgreSQL's schema has: the per-workspace event position and its head
    /// rows, which the copy derives; a webhook's sending lease, which starts empty; and the
    /// nodes of a cluster and their duty leases, which they take as they start.
    const POSTGRES_ONLY: &[(&str, &str)] = &[
        ("cluster_nodes", "applied_through"),
        ("cluster_nodes", "heartbeat_at"),
        ("cluster_nodes", "id"),
        ("cluster_nodes", "started_at"),
        ("event_heads", "at"),
        ("event_heads", "pos"),
        ("event_heads", "workspace_id"),
        ("events", "pos"),
        ("leases", "expires_at"),
        ("leases", "holder"),
        ("leases", "name"),
        ("leases", "token"),
        ("webhooks", "busy_until"),
    ];

    /// Columns both schemas have that the copy leaves behind: browser logins in flight,
    /// which last minutes and would not survive the stop a migration needs anyway.
    const NOT_COPIED: &[(&str, &str)] = &[
        ("device_logins", "created_at"),
        ("device_logins", "device_hash"),
        ("device_logins", "expires_at"),
        ("device_logins", "approved_by"),
        ("device_logins", "key_name"),
        ("device_logins", "namespace"),
        ("device_logins", "state"),
        ("device_logins", "user_hash"),
        ("device_logins", "workspace_id"),
    ];

    /// What both schemas hold in common: the copied columns and those left behind.
    fn common_columns() -> BTreeSet<(String, String)> {
        TABLES
            .iter()
            .flat_map(|t| {
                t.columns
                    .iter()
                    .map(|(c, _)| (t.name.to_owned(), c.to_string()))
            })
            .chain(
                NOT_COPIED
                    .iter()
                    .map(|(t, c)| (t.to_string(), c.to_string())),
            )
            .collect()
    }

    /// The two migration folders describe one schema, and the copy knows all of it: a column
    /// added to one folder but not the other, or not to [`TABLES`], fails here.
    #[tokio::test]
    async fn both_schemas_hold_exactly_what_the_copy_moves() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!("sqlite://{}", dir.path().join("w.db").display());
        SqliteStore::open(&sqlite).await.unwrap().close().await;
        let mut conn = sqlx::SqliteConnection::connect(&sqlite).await.unwrap();
        let on_sqlite: Vec<(String, String)> = sqlx::query_as(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'
               AND m.name <> '_sqlx_migrations'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();

        let server =
            std::env::var("WARREN_TEST_PG_URL").expect("pg-tests needs WARREN_TEST_PG_URL");
        let name = format!("schema_{}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
        admin
            .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
            .await
            .unwrap();
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        let pg = PgStore::open(&format!("{}/{name}", server.rsplit_once('/').unwrap().0))
            .await
            .unwrap();
        let on_postgres: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
        )
        .fetch_all(pg.pool())
        .await
        .unwrap();
        pg.close().await;

        let on_sqlite: BTreeSet<_> = on_sqlite.into_iter().collect();
        let on_postgres: BTreeSet<_> = on_postgres.into_iter().collect();
        let mut expected_pg = common_columns();
        expected_pg.extend(
            POSTGRES_ONLY
                .iter()
                .map(|(t, c)| (t.to_string(), c.to_string())),
        );
        assert_eq!(
            on_sqlite
                .symmetric_difference(&common_columns())
                .collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "SQLite's schema and the copied columns differ"
        );
        assert_eq!(
            on_postgres
                .symmetric_difference(&expected_pg)
                .collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "PostgreSQL's schema and the copied columns differ"
        );
    }
}
