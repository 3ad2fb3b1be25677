//! The REPL driven through a real pseudo-terminal, as a user types: a
//! statement over two lines, a continuous query stopped with Ctrl-C, a bad
//! statement, meta-commands, a background sink fed by INSERT, history.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use expectrl::{ControlCode, Expect, Session};

use crate::common::{line_server, port_of};

fn spawn_repl(history: &std::path::Path) -> expectrl::session::OsSession {
    let mut command = Command::new(env!("CARGO_BIN_EXE_brook"));
    command
        .args(["--batch-interval", "200ms"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("BROOK_HISTORY", history)
        .env("TERM", "xterm");
    let mut session = Session::spawn(command).expect("start brook in a pty");
    session.set_expect_timeout(Some(Duration::from_secs(30)));
    session
}

#[test]
fn the_repl_runs_queries_survives_ctrl_c_and_errors_and_keeps_history() {
    let dir = std::env::temp_dir().join(format!("brook-repl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let history = dir.join("history");
    let address = line_server(|mut client| {
        // A line every 20 ms for at most 60 s, until brook goes away.
        for i in 0..3000 {
            if client.write_all(format!("tick {i}\n").as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let mut repl = spawn_repl(&history);
    repl.expect("brook> ").unwrap();

    // A statement typed over two lines runs at the ';'.
    repl.send_line("CREATE STREAM lines").unwrap();
    repl.send_line(format!(
        "WITH (connector = 'socket', host = '127.0.0.1', port = '{}');",
        port_of(&address)
    ))
    .unwrap();
    // Wait for the statement's own output before the prompt: while a line
    // is typed, rustyline redraws it with the prompt in front.
    repl.expect("CREATE STREAM\r\n").unwrap();
    repl.expect("brook> ").unwrap();

    // A continuous query prints batch after batch until Ctrl-C...
    repl.send_line("SELECT line FROM lines;").unwrap();
    repl.expect("Batch 1 at").unwrap();
    repl.expect("Batch 2 at").unwrap();
    repl.send(ControlCode::EndOfText).unwrap();
    // ...which stops that query only and returns to the prompt.
    repl.expect("Query 1 stopped after").unwrap();
    repl.expect("brook> ").unwrap();

    // A bad statement: the error with a caret, and the session goes on.
    repl.send_line("SELECT * FORM lines;").unwrap();
    repl.expect("ERROR:").unwrap();
    repl.expect("|          ^").unwrap();
    repl.expect("brook> ").unwrap();

    // The stream kept receiving while no query ran.
    repl.send_line("\\d lines").unwrap();
    repl.expect("Stream \"lines\" (socket)").unwrap();
    repl.expect("rows received: ").unwrap();
    repl.expect("brook> ").unwrap();

    // A background sink over a queue, fed by INSERT while the user types.
    let out = dir.join("out");
    repl.send_line("CREATE STREAM q (word TEXT) WITH (connector = 'queue');")
        .unwrap();
    repl.expect("CREATE STREAM\r\n").unwrap();
    repl.expect("brook> ").unwrap();
    repl.send_line(format!(
        "CREATE SINK counts WITH (connector = 'file', path = '{}') AS SELECT word, COUNT(*) AS n FROM q GROUP BY word;",
        out.display()
    ))
    .unwrap();
    repl.expect("runs in the background").unwrap();
    repl.expect("brook> ").unwrap();
    repl.send_line("INSERT INTO q VALUES ('a'), ('b'), ('a');")
        .unwrap();
    repl.expect("INSERT\r\n").unwrap();
    repl.expect("brook> ").unwrap();
    // Wait until the batch with the rows has been written.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&out).map_or(0, |d| d.count()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sink wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    repl.send_line("\\d").unwrap();
    repl.expect("Running queries").unwrap();
    repl.expect("sink counts").unwrap();
    repl.expect("brook> ").unwrap();
    repl.send_line("STOP QUERY 2;").unwrap();
    repl.expect("STOP QUERY\r\n").unwrap();
    repl.expect("brook> ").unwrap();

    repl.send_line("\\q").unwrap();
    repl.expect(expectrl::Eof).unwrap();

    let files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut rows: Vec<String> = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .skip(1)
                .map(|l| l.split(',').skip(2).collect::<Vec<_>>().join(","))
                .collect::<Vec<_>>()
        })
        .collect();
    rows.sort();
    assert_eq!(rows, vec!["a,2", "b,1"]);

    let history = std::fs::read_to_string(&history).expect("history file written");
    assert!(history.contains("CREATE STREAM lines"), "{history}");
    assert!(history.contains("SELECT line FROM lines;"), "{history}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_long_run_on_a_terminal_shows_a_live_status_line() {
    let address = line_server(|mut client| {
        for i in 0..3000 {
            if client.write_all(format!("tick {i}\n").as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let mut command = Command::new(env!("CARGO_BIN_EXE_brook"));
    command
        .args([
            "--batch-interval",
            "300ms",
            "--duration",
            "3s",
            "-c",
            &format!(
                "CREATE STREAM lines WITH (connector = 'socket', host = '127.0.0.1', port = '{}'); \
                 SELECT COUNT(*) AS n FROM lines",
                port_of(&address)
            ),
        ])
        .env("TERM", "xterm");
    let mut run = Session::spawn(command).expect("start brook in a pty");
    run.set_expect_timeout(Some(Duration::from_secs(30)));
    run.expect("brook: 1 query | ").unwrap();
    run.expect("rows/s in | lag").unwrap();
    run.expect(expectrl::Eof).unwrap();
}

#[test]
fn regression_ctrl_c_cancels_a_one_off_query_that_never_ends_and_the_repl_goes_on() {
    let history = std::env::temp_dir().join(format!("brook-repl-cancel-{}", std::process::id()));
    let mut repl = spawn_repl(&history);
    repl.expect("brook> ").unwrap();
    repl.send_line(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT COUNT(*) FROM r;",
    )
    .unwrap();
    // Let it run, then interrupt it: before, Ctrl-C ended the session.
    std::thread::sleep(Duration::from_millis(500));
    repl.send(ControlCode::EndOfText).unwrap();
    repl.expect("ERROR: canceling statement due to user request")
        .unwrap();
    repl.expect("brook> ").unwrap();
    repl.send_line("SELECT 40 + 2 AS answer;").unwrap();
    repl.expect("| 42     |").unwrap();
    repl.expect("brook> ").unwrap();
    repl.send_line("\\q").unwrap();
    repl.expect(expectrl::Eof).unwrap();
    let _ = std::fs::remove_file(history);
}
