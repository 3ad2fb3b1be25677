//! PostgreSQL CDC against a real server with `wal_level = logical`: the
//! table's rows, then its inserts, updates and deletes, through a RUNNING
//! aggregate into a PostgreSQL upsert sink that stays equal to the same
//! aggregate over the table; a restart that repeats and loses nothing; a
//! composite key; a connection cut by the server.

use std::time::{Duration, Instant};

use brook::StreamContext;

use crate::common::{DEADLINE, recording_warnings};
use crate::pg_server::PgServer;

const AGGREGATE: &str = "SELECT status, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY status ORDER BY status";

/// Waits until `sink_sql` and `source_sql` give the same rows on `pg`.
async fn until_equal(pg: &PgServer, sink_sql: &str, source_sql: &str) {
    let deadline = Instant::now() + DEADLINE;
    let mut sink = Vec::new();
    let mut source = Vec::new();
    while Instant::now() < deadline {
        source = pg.rows(source_sql).await;
        sink = pg.rows(sink_sql).await;
        if sink == source {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the sink holds {sink:?}, the aggregate over the table is {source:?}");
}

async fn start_counts(pg: &PgServer, sink_table: &str) -> StreamContext {
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.sql(&format!(
        "CREATE STREAM orders (id INT, status TEXT, amount BIGINT, paid BOOLEAN, at TIMESTAMP, PRIMARY KEY (id)) \
         WITH (connector = 'postgres-cdc', url = '{}', table = 'orders')",
        pg.url()
    ))
    .await
    .unwrap();
    ctx.sql(&format!(
        "CREATE SINK counts WITH (connector = 'postgres', url = '{}', table = '{sink_table}', \
         mode = 'upsert', key = 'status', create_table = 'true') AS \
         SELECT status, COUNT(*) AS n, SUM(amount) AS total FROM RUNNING(orders, 'update') GROUP BY status",
        pg.url()
    ))
    .await
    .unwrap();
    ctx
}

const SINK: &str = "SELECT status, n, total FROM status_counts ORDER BY status";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_follows_the_tables_snapshot_and_changes_and_a_restart_repeats_nothing() {
    let pg = PgServer::start().await;
    let client = pg.client().await;
    client
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, status text, amount bigint, paid boolean, at timestamptz); \
             INSERT INTO orders VALUES (1, 'new', 10, false, '2024-01-02 10:00:00+00'), \
             (2, 'new', 20, true, NULL), (3, 'paid', 5, true, '2024-01-02 11:00:00+02');",
        )
        .await
        .unwrap();
    let ctx = start_counts(&pg, "status_counts").await;
    until_equal(&pg, SINK, AGGREGATE).await;
    for change in [
        "UPDATE orders SET status = 'paid' WHERE id = 1",
        "DELETE FROM orders WHERE id = 3",
        "BEGIN; INSERT INTO orders VALUES (4, 'shipped', 7, false, now()); \
         UPDATE orders SET amount = amount + 1; DELETE FROM orders WHERE id = 2; COMMIT",
        // The last 'new' order moves on: the group's row goes.
        "UPDATE orders SET status = 'shipped' WHERE status = 'new'",
        "INSERT INTO orders SELECT g, 'bulk', g, true, now() FROM generate_series(100, 2099) g",
        "UPDATE orders SET id = id + 10000 WHERE id = 100",
    ] {
        client.batch_execute(change).await.unwrap();
        until_equal(&pg, SINK, AGGREGATE).await;
    }
    assert_eq!(
        pg.rows("SELECT COUNT(*) FROM status_counts WHERE status = 'new'")
            .await,
        [["0"]]
    );
    // The slot moved on with the finished batches.
    let confirmed = pg
        .rows("SELECT confirmed_flush_lsn IS NOT NULL FROM pg_replication_slots WHERE slot_name = 'brook_orders'")
        .await;
    assert_eq!(confirmed, [["t"]]);
    drop(ctx);

    // Changes while brook is away, then a fresh start (a new query, with
    // a table of its own: without a checkpoint it knows nothing of the
    // first run's rows): the snapshot and the slot meet without a change
    // read twice or lost.
    client
        .batch_execute(
            "DELETE FROM orders WHERE id BETWEEN 100 AND 1099; UPDATE orders SET status = 'gone' WHERE id = 4",
        )
        .await
        .unwrap();
    let ctx = start_counts(&pg, "status_counts_again").await;
    let again = "SELECT status, n, total FROM status_counts_again ORDER BY status";
    until_equal(&pg, again, AGGREGATE).await;
    client
        .batch_execute("INSERT INTO orders VALUES (5, 'new', 1, true, now())")
        .await
        .unwrap();
    until_equal(&pg, again, AGGREGATE).await;
    drop(ctx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_come_through_typed_and_a_composite_key_finds_its_rows() {
    use futures::StreamExt;
    let pg = PgServer::start().await;
    let client = pg.client().await;
    client
        .batch_execute(
            "CREATE TABLE stock (shop text, item int, qty bigint, ok boolean, at timestamptz, price numeric(8,2), \
             PRIMARY KEY (shop, item)); \
             INSERT INTO stock VALUES ('a', 1, 5, true, '2024-01-02 10:00:00+00', 1.50), \
             ('a', 2, 7, false, '2024-01-02 11:00:00+02', 2.25), ('b', 1, 1, NULL, NULL, NULL);",
        )
        .await
        .unwrap();
    let (warn, warnings) = recording_warnings();
    let ctx = StreamContext::with_warning_handler(Duration::from_millis(100), warn);
    ctx.sql(&format!(
        "CREATE STREAM stock (shop TEXT, item INT, qty BIGINT, ok BOOLEAN, at TIMESTAMP, price DECIMAL(8,2), \
         PRIMARY KEY (shop, item)) WITH (connector = 'postgres-cdc', url = '{}', table = 'stock')",
        pg.url()
    ))
    .await
    .unwrap();
    let brook::SqlOutput::Query(mut query) = ctx
        .sql(
            "SELECT shop, item, qty, ok, at, price FROM RUNNING(stock) \
             GROUP BY shop, item, qty, ok, at, price ORDER BY shop, item",
        )
        .await
        .unwrap()
    else {
        panic!("a query");
    };
    let mut step = 0;
    let deadline = Instant::now() + DEADLINE;
    let mut rows = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "step {step}: {rows:?}");
        let output = tokio::time::timeout(DEADLINE, query.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        rows = crate::common::table_rows(&output.batches);
        let expected: Vec<Vec<&str>> = match step {
            0 => vec![
                vec!["a", "1", "5", "true", "2024-01-02T10:00:00", "1.50"],
                vec!["a", "2", "7", "false", "2024-01-02T09:00:00", "2.25"],
                vec!["b", "1", "1", "NULL", "NULL", "NULL"],
            ],
            _ => vec![
                vec!["a", "1", "6", "true", "2024-01-02T10:00:00", "1.50"],
                vec!["b", "1", "1", "NULL", "NULL", "NULL"],
            ],
        };
        if rows == expected {
            if step == 1 {
                break;
            }
            step = 1;
            // Same item number in another shop: only the composite key
            // tells them apart.
            client
                .batch_execute(
                    "UPDATE stock SET qty = 6 WHERE shop = 'a' AND item = 1; \
                     DELETE FROM stock WHERE shop = 'a' AND item = 2",
                )
                .await
                .unwrap();
        }
    }
    // The server cuts brook's connection: brook says so, reconnects, and
    // the changes go on.
    client
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'brook cdc stock'",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .batch_execute("INSERT INTO stock VALUES ('c', 9, 3, true, NULL, NULL)")
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(
            Instant::now() < deadline,
            "the change after the cut never came"
        );
        let output = tokio::time::timeout(DEADLINE, query.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if crate::common::table_rows(&output.batches).len() == 3 {
            break;
        }
    }
    let warnings = warnings.lock().unwrap().join("\n");
    assert!(warnings.contains("lost the change stream"), "{warnings}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brook_killed_six_times_keeps_the_sink_equal_to_the_aggregate_over_the_table() {
    use crate::checkpoint::{Dir, spawn_checkpointed};
    let mut pg = PgServer::start().await;
    let client = pg.client().await;
    client
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, status text, amount bigint); \
             INSERT INTO orders SELECT g, 'new', g FROM generate_series(1, 30) g;",
        )
        .await
        .unwrap();
    let checkpoints = Dir::new("cdc-kill");
    let script = checkpoints.path().with_extension("sql");
    std::fs::write(
        &script,
        format!(
            "SET batch_interval = '100ms';\n\
             CREATE STREAM orders (id INT, status TEXT, amount BIGINT, PRIMARY KEY (id)) \
               WITH (connector = 'postgres-cdc', url = '{url}', table = 'orders');\n\
             CREATE SINK counts WITH (connector = 'postgres', url = '{url}', table = 'status_counts', \
               mode = 'upsert', key = 'status', create_table = 'true') AS \
               SELECT status, COUNT(*) AS n, SUM(amount) AS total FROM RUNNING(orders, 'update') GROUP BY status;\n",
            url = pg.url()
        ),
    )
    .unwrap();
    let brook = || spawn_checkpointed(&script, checkpoints.path());
    // Changes go on while brook runs, is killed and restarts.
    let writer = {
        let url = pg.url();
        tokio::spawn(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            let mut rng = crate::common::Rng(0x0c0ffee);
            let statuses = ["new", "paid", "shipped", "returned"];
            for _ in 0..120 {
                let id = rng.below(40) + 1;
                let status = statuses[rng.below(4) as usize];
                let sql = match rng.below(4) {
                    0 => format!("DELETE FROM orders WHERE id = {id}"),
                    1 => format!(
                        "UPDATE orders SET status = '{status}', amount = amount + 1 WHERE id = {id}"
                    ),
                    _ => format!(
                        "INSERT INTO orders VALUES ({id}, '{status}', {id}) \
                         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status"
                    ),
                };
                client.batch_execute(&sql).await.unwrap();
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    let mut rng = crate::common::Rng(0xdead_beef);
    let mut resumed_from = Vec::new();
    for _ in 0..6 {
        let mut child = brook();
        tokio::time::sleep(Duration::from_millis(500 + rng.below(700))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let listed = std::process::Command::new(env!("CARGO_BIN_EXE_brook"))
            .arg("checkpoints")
            .arg(checkpoints.path())
            .output()
            .unwrap();
        resumed_from.push(String::from_utf8_lossy(&listed.stdout).into_owned());
    }
    // Each run checkpointed (the next resumes from there): the last
    // checkpoint's batch grew from run to run.
    let batches: Vec<u64> = resumed_from
        .iter()
        .map(|text| {
            text.split("batch ")
                .filter_map(|rest| {
                    rest.split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse()
                        .ok()
                })
                .max()
                .unwrap_or(0)
        })
        .collect();
    assert!(
        batches.windows(2).all(|pair| pair[1] > pair[0]) && batches[0] > 0,
        "checkpoint batches per run: {batches:?}\n{}",
        resumed_from.join("\n")
    );
    writer.await.unwrap();
    let mut child = brook();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut sink, mut source) = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        source = pg.rows(AGGREGATE).await;
        sink = pg.rows(SINK).await;
        if sink == source {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A few more batches: nothing moves.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = pg.rows(SINK).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let slot = pg
        .rows("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'brook_orders' AND confirmed_flush_lsn IS NOT NULL")
        .await;
    pg.stop();
    let _ = std::fs::remove_file(&script);
    assert_eq!(
        sink, source,
        "the sink against the aggregate over the table"
    );
    assert_eq!(after, source);
    assert_eq!(slot, [["1"]]);
}

/// The rows of a one-off `sql` (a query reading no stream).
async fn one_off(ctx: &StreamContext, sql: &str) -> Vec<Vec<String>> {
    match ctx.sql(sql).await.unwrap() {
        brook::SqlOutput::Rows { batches, .. } => crate::common::table_rows(&batches),
        other => panic!("{sql}: {other:?}"),
    }
}

async fn until_one_off(ctx: &StreamContext, sql: &str, expected: &[&[&str]]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let rows = one_off(ctx, sql).await;
        if rows == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: {rows:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_joined_with_a_table_kept_current_by_cdc_meets_each_keys_row_as_of_its_batch() {
    use futures::StreamExt;
    let pg = PgServer::start().await;
    let client = pg.client().await;
    client
        .batch_execute(
            "CREATE TABLE users (id int PRIMARY KEY, name text); \
             INSERT INTO users VALUES (1, 'ann'), (2, 'bob');",
        )
        .await
        .unwrap();
    let ctx = StreamContext::new(Duration::from_millis(50));
    ctx.sql(&format!(
        "CREATE TABLE users (id INT, name TEXT, PRIMARY KEY (id)) \
         WITH (connector = 'postgres-cdc', url = '{}', table = 'users')",
        pg.url()
    ))
    .await
    .unwrap();
    ctx.sql("CREATE STREAM orders (id INT, user_id INT) WITH (connector = 'queue')")
        .await
        .unwrap();
    // The table reads as its current rows in a one-off SELECT.
    until_one_off(
        &ctx,
        "SELECT id, name FROM users ORDER BY id",
        &[&["1", "ann"], &["2", "bob"]],
    )
    .await;
    let brook::SqlOutput::Query(mut query) = ctx
        .sql(
            "SELECT o.id, o.user_id, u.name FROM orders AS o \
             LEFT JOIN users FOR SYSTEM_TIME AS OF o.proc_time AS u ON o.user_id = u.id",
        )
        .await
        .unwrap()
    else {
        panic!("a continuous query");
    };
    // A change in PostgreSQL, the table's row once it is applied, and the
    // row the next order joins.
    type Step<'a> = (&'a str, &'a [&'a [&'a str]], &'a [&'a str]);
    let steps: [Step; 4] = [
        ("", &[&["1", "ann"]], &["10", "1", "ann"]),
        (
            "UPDATE users SET name = 'amy' WHERE id = 1",
            &[&["1", "amy"]],
            &["11", "1", "amy"],
        ),
        ("DELETE FROM users WHERE id = 1", &[], &["12", "1", "NULL"]),
        (
            "INSERT INTO users VALUES (1, 'al')",
            &[&["1", "al"]],
            &["13", "1", "al"],
        ),
    ];
    for (n, (change, table, joined)) in steps.into_iter().enumerate() {
        if !change.is_empty() {
            client.batch_execute(change).await.unwrap();
        }
        until_one_off(&ctx, "SELECT id, name FROM users WHERE id = 1", table).await;
        ctx.sql(&format!("INSERT INTO orders VALUES ({}, 1)", 10 + n))
            .await
            .unwrap();
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "step {n}: no joined row");
            let output = tokio::time::timeout(DEADLINE, query.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let rows = crate::common::table_rows(&output.batches);
            if !rows.is_empty() {
                assert_eq!(rows, [joined.to_vec()], "step {n}");
                break;
            }
        }
    }
    // The table's query shows in SHOW QUERIES with the rows it keeps.
    let queries = one_off(&ctx, "SELECT sql, retained_rows FROM brook.queries").await;
    assert!(
        queries
            .iter()
            .any(|q| q[0].starts_with("CREATE TABLE users") && q[1] == "2"),
        "{queries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdc_example_counts_orders_per_status_down_as_they_move_on() {
    use futures::StreamExt;
    let pg = PgServer::start().await;
    let client = pg.client().await;
    client
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, status text, amount bigint); \
             INSERT INTO orders VALUES (1, 'new', 10), (2, 'new', 20), (3, 'paid', 5);",
        )
        .await
        .unwrap();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/orders_by_status_cdc.sql");
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("postgres://postgres@127.0.0.1:5432/postgres", &pg.url());
    let statements = brook::sql::parse_sql(&text).unwrap();
    let ctx = StreamContext::new(Duration::from_millis(100));
    ctx.execute(&statements[0]).await.unwrap();
    let brook::SqlOutput::Query(mut query) = ctx.execute(&statements[1]).await.unwrap() else {
        panic!("the example's SELECT is a continuous query");
    };
    let mut next_changes = async || loop {
        let output = tokio::time::timeout(DEADLINE, query.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let rows = crate::common::table_rows(&output.batches);
        if !rows.is_empty() {
            return rows;
        }
    };
    assert_eq!(
        next_changes().await,
        [["+I", "new", "2", "30"], ["+I", "paid", "1", "5"]]
    );
    client
        .batch_execute("UPDATE orders SET status = 'paid' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        next_changes().await,
        [["+U", "new", "1", "20"], ["+U", "paid", "2", "15"]]
    );
    client
        .batch_execute("DELETE FROM orders WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(next_changes().await, [["-D", "new", "1", "20"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_table_dropped_and_created_again_is_added_back_to_its_publication() {
    let pg = PgServer::start().await;
    let client = pg.client().await;
    let create = "CREATE TABLE orders (id int PRIMARY KEY, status text, amount bigint, paid boolean, at timestamptz)";
    client.batch_execute(create).await.unwrap();
    let ctx = start_counts(&pg, "status_counts").await;
    client
        .batch_execute("INSERT INTO orders VALUES (1, 'new', 1, true, NULL)")
        .await
        .unwrap();
    until_equal(&pg, SINK, AGGREGATE).await;
    drop(ctx);
    // Dropping the table takes it out of brook's publication.
    client
        .batch_execute(&format!(
            "DROP TABLE orders; SELECT pg_drop_replication_slot('brook_orders'); {create}"
        ))
        .await
        .unwrap();
    let ctx = start_counts(&pg, "status_counts_again").await;
    client
        .batch_execute("INSERT INTO orders VALUES (2, 'paid', 5, true, NULL)")
        .await
        .unwrap();
    until_equal(
        &pg,
        "SELECT status, n, total FROM status_counts_again ORDER BY status",
        AGGREGATE,
    )
    .await;
    drop(ctx);
}
