//! Lookup joins against a real PostgreSQL started by the test: a stream
//! joined with `CREATE TABLE ... WITH (connector = 'postgres')` reads each
//! batch's keys in one round trip (counted in the server's statement log),
//! caches found rows and absent keys for `lookup_cache_ttl`, sees a change
//! after the TTL and not before, and survives a lost connection.

use std::time::Duration;

use brook::{SqlOutput, StreamContext};

use crate::common::{explain, next_batch, rows, start};
use crate::pg_server::PgServer;

/// The lookup statements the server executed so far (its log, with
/// `log_statement = 'all'`).
fn lookups_executed(pg: &PgServer) -> usize {
    let log = std::fs::read_to_string(pg.dir().join("server.log")).unwrap_or_default();
    log.lines()
        .filter(|line| line.contains("execute") && line.contains("FROM \"sensors\" WHERE"))
        .count()
}

async fn sensors_server() -> PgServer {
    let pg = PgServer::start().await;
    let client = pg.client().await;
    for statement in [
        "CREATE TABLE sensors (id INT PRIMARY KEY, room TEXT)",
        "INSERT INTO sensors VALUES (1, 'kitchen'), (2, 'hall'), (3, 'attic')",
        "ALTER SYSTEM SET log_statement = 'all'",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(statement).await.unwrap();
    }
    // The reload reaches every backend before the test's first lookup.
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg
}

async fn context(pg: &PgServer, ttl: &str) -> StreamContext {
    let ctx = StreamContext::new(Duration::from_millis(30));
    for statement in [
        "CREATE STREAM readings (sensor_id INT, v BIGINT) WITH (connector = 'queue', one_at_a_time = 'true')"
            .to_string(),
        format!(
            "CREATE TABLE sensors (id INT, room TEXT) WITH (connector = 'postgres', url = '{}', table = 'sensors', lookup_cache_ttl = '{ttl}', lookup_cache_rows = '1000')",
            pg.url()
        ),
    ] {
        ctx.sql(&statement).await.unwrap();
    }
    ctx
}

/// Inserts `values` into `readings` as one batch and returns the rows of
/// the batch that holds them.
async fn batch_of(
    ctx: &StreamContext,
    query: &mut brook::ContinuousQuery,
    values: &str,
) -> Vec<Vec<String>> {
    match ctx
        .sql(&format!("INSERT INTO readings VALUES {values}"))
        .await
    {
        Ok(SqlOutput::Done | SqlOutput::Rows { .. }) => {}
        other => panic!("{other:?}"),
    }
    loop {
        let output = next_batch(query).await.expect("the query goes on").unwrap();
        if output.rows_in > 0 {
            let mut rows = rows(&output);
            rows.sort();
            return rows;
        }
    }
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

#[tokio::test]
async fn a_lookup_join_reads_a_batchs_new_keys_in_one_round_trip_and_sees_a_change_after_the_ttl() {
    let pg = sensors_server().await;
    let ctx = context(&pg, "3s").await;
    // Flink's spelling is accepted; the table is read as of each batch.
    let sql = "SELECT r.sensor_id, r.v, s.room FROM readings r \
               JOIN sensors FOR SYSTEM_TIME AS OF r.proc_time AS s ON r.sensor_id = s.id";
    let text = explain(&ctx, sql).await;
    assert!(
        text.contains("lookup join: table 'sensors' by its column 'id'"),
        "{text}"
    );
    assert!(!text.contains(crate::pg_server::PASSWORD), "{text}");
    let before = lookups_executed(&pg);
    let mut query = start(&ctx, sql).await;
    // Keys 1 and 2: one round trip.
    assert_eq!(
        batch_of(&ctx, &mut query, "(1, 10), (2, 20), (1, 11)").await,
        vec![
            row(&["1", "10", "kitchen"]),
            row(&["1", "11", "kitchen"]),
            row(&["2", "20", "hall"])
        ]
    );
    // Key 4 is not in PostgreSQL: no row (inner join); one round trip for
    // it alone.
    assert_eq!(
        batch_of(&ctx, &mut query, "(1, 12), (4, 40)").await,
        vec![row(&["1", "12", "kitchen"])]
    );
    // Keys 2 and 4 (its absence cached too): no round trip.
    assert_eq!(
        batch_of(&ctx, &mut query, "(2, 21), (4, 41)").await,
        vec![row(&["2", "21", "hall"])]
    );
    pg.client()
        .await
        .batch_execute("UPDATE sensors SET room = 'cellar' WHERE id = 1")
        .await
        .unwrap();
    // Within the TTL: the cached row.
    assert_eq!(
        batch_of(&ctx, &mut query, "(1, 13)").await,
        vec![row(&["1", "13", "kitchen"])]
    );
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    // After it: read again.
    assert_eq!(
        batch_of(&ctx, &mut query, "(1, 14)").await,
        vec![row(&["1", "14", "cellar"])]
    );
    drop(query);
    // The log is written as statements run; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lookups_executed(&pg) - before, 3, "round trips");
}

#[tokio::test]
async fn a_left_lookup_join_gives_nulls_for_a_missing_key_and_survives_a_lost_connection() {
    let mut pg = sensors_server().await;
    let ctx = context(&pg, "0s").await;
    let sql =
        "SELECT r.sensor_id, s.room FROM readings r LEFT JOIN sensors s ON r.sensor_id = s.id";
    let mut query = start(&ctx, sql).await;
    assert_eq!(
        batch_of(&ctx, &mut query, "(3, 1), (9, 2)").await,
        vec![row(&["3", "attic"]), row(&["9", "NULL"])]
    );
    // The server goes away and comes back while the next batch looks up:
    // the lookup reconnects (with a backoff) and the batch is whole.
    pg.stop();
    let restart = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        pg.run().await;
    };
    let (rows, ()) = tokio::join!(batch_of(&ctx, &mut query, "(2, 3)"), restart);
    assert_eq!(rows, vec![row(&["2", "hall"])]);
    let err = ctx
        .sql("CREATE TABLE t (id INT) WITH (connector = 'postgres', url = 'postgres://u:secret@127.0.0.1:1/db', table = 't', lookup_cache_ttl = 'soon')")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lookup_cache_ttl"), "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");
}
