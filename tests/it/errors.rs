//! Errors say whose fault they are, carry a location only when they are
//! SQL's, and keep their causes.

use std::error::Error as _;
use std::time::Duration;

use brook::{BrookError, ErrorKind, StreamContext, error_chain};

#[tokio::test]
async fn errors_say_whose_fault_they_are_and_keep_their_causes() {
    let ctx = StreamContext::new(Duration::from_millis(50));

    // The user's: SQL, with a location.
    let err = ctx.sql("SELECT * FORM t").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::User);
    assert!(err.location().is_some());
    // A request that cannot be carried out is the statement's error too.
    let err = ctx
        .sql("CREATE STREAM s (a INT) WITH (connector = 'queue', colour = 'red')")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::User);
    assert!(err.location().is_some());

    // A full queue is not a mistake in the SQL: no location, and the
    // stream's state, not the user's statement, is at fault.
    ctx.sql("CREATE STREAM q (a INT) WITH (connector = 'queue', max_pending_rows = '2')")
        .await
        .unwrap();
    ctx.sql("INSERT INTO q VALUES (1), (2)").await.unwrap();
    let err = ctx.sql("INSERT INTO q VALUES (3)").await.unwrap_err();
    assert!(matches!(err, BrookError::StreamFull { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::External);
    assert!(err.location().is_none());
    assert!(err.to_string().contains("stream 'q' is full"), "{err}");

    // The file system's: the cause is kept as the source.
    let file = std::env::temp_dir().join(format!("brook-not-a-dir-{}", std::process::id()));
    std::fs::write(&file, b"x").unwrap();
    let err = ctx
        .sql(&format!(
            "CREATE SINK out WITH (connector = 'file', path = '{}/sub') AS SELECT a FROM q",
            file.display()
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, BrookError::Io { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::External);
    assert!(err.location().is_none());
    let cause = err.source().expect("the I/O error is kept");
    assert!(cause.downcast_ref::<std::io::Error>().is_some());
    let chain = error_chain(&err);
    assert!(
        chain.contains("sink 'out': cannot create directory"),
        "{chain}"
    );
    let _ = std::fs::remove_file(&file);
    assert!(ctx.sink_names().is_empty());
}

#[tokio::test]
async fn regression_a_panic_in_a_query_ends_it_with_an_internal_error_not_silently() {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    use futures::StreamExt;
    use std::sync::Arc;

    let ctx = StreamContext::new(Duration::from_millis(30));
    // A function that panics stands for a bug anywhere below a query.
    ctx.session().register_udf(create_udf(
        "explode",
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Volatile,
        Arc::new(
            |_: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> { panic!("boom") },
        ),
    ));
    ctx.sql("CREATE STREAM q (a BIGINT) WITH (connector = 'queue')")
        .await
        .unwrap();
    let mut query = crate::common::start(&ctx, "SELECT explode(a) AS b FROM q").await;
    ctx.sql("INSERT INTO q VALUES (1)").await.unwrap();
    let last = tokio::time::timeout(crate::common::DEADLINE, async {
        let mut last = None;
        while let Some(output) = query.next().await {
            last = Some(output);
        }
        last
    })
    .await
    .expect("the query ends");
    let err = last.expect("an item").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(err.to_string().contains("boom"), "{err}");
}
