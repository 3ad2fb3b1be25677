//! The REPL driven through a real pseudo-terminal, as a user types: a
//! statement over two lines, a continuous query stopped with Ctrl-C, a bad
//! statement, meta-commands, a background sink fed by INSERT, history.

use std::fmt::Debug;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use expectrl::session::{OsProcess, OsStream};
use expectrl::stream::log::LogStream;
use expectrl::{ControlCode, Expect, Needle, Session};

use crate::common::{DEADLINE, line_server, port_of};

/// Everything a program in a pseudo-terminal printed and everything typed
/// into it, in order: expectrl's log, one `read: "..."` or `write: "..."`
/// line per transfer, control characters escaped.
#[derive(Clone, Default)]
struct Transcript(Arc<Mutex<Vec<u8>>>);

impl Write for Transcript {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Display for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0.lock().unwrap()))
    }
}

/// A program in a pseudo-terminal, driven as a user types. An expectation
/// that fails shows the whole transcript, so that a failure explains itself.
struct Terminal {
    session: Session<OsProcess, LogStream<OsStream, Transcript>>,
    transcript: Transcript,
}

impl Terminal {
    /// Starts `command` with `TERM=xterm`; each expectation waits 30 s.
    fn spawn(mut command: Command) -> Self {
        command.env("TERM", "xterm");
        let transcript = Transcript::default();
        let session = Session::spawn(command).expect("start brook in a pty");
        let mut session = expectrl::session::log(session, transcript.clone()).expect("log the pty");
        session.set_expect_timeout(Some(Duration::from_secs(30)));
        Self {
            session,
            transcript,
        }
    }

    fn expect<N: Needle + Debug>(&mut self, needle: N) {
        if let Err(err) = self.session.expect(&needle) {
            panic!(
                "expected {needle:?}: {err}\n--- the terminal's transcript ---\n{}--- end ---",
                self.transcript
            );
        }
    }

    fn send_line(&mut self, line: impl AsRef<str>) {
        self.session.send_line(line.as_ref()).expect("type a line");
    }

    fn send(&mut self, code: ControlCode) {
        self.session.send(code).expect("type a control code");
    }
}

fn spawn_repl(history: &Path) -> Terminal {
    let mut command = Command::new(env!("CARGO_BIN_EXE_brook"));
    command
        .args(["--batch-interval", "200ms"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("BROOK_HISTORY", history);
    Terminal::spawn(command)
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
    repl.expect("brook> ");

    // A statement typed over two lines runs at the ';'.
    repl.send_line("CREATE STREAM lines");
    repl.send_line(format!(
        "WITH (connector = 'socket', host = '127.0.0.1', port = '{}');",
        port_of(&address)
    ));
    // Wait for the statement's own output before the prompt: while a line
    // is typed, rustyline redraws it with the prompt in front.
    repl.expect("CREATE STREAM\r\n");
    repl.expect("brook> ");

    // A continuous query prints batch after batch until Ctrl-C...
    repl.send_line("SELECT line FROM lines;");
    repl.expect("Batch 1 at");
    repl.expect("Batch 2 at");
    repl.send(ControlCode::EndOfText);
    // ...which stops that query only and returns to the prompt.
    repl.expect("Query 1 stopped after");
    repl.expect("brook> ");

    // A bad statement: the error with a caret, and the session goes on.
    repl.send_line("SELECT * FORM lines;");
    repl.expect("ERROR:");
    repl.expect("|          ^");
    repl.expect("brook> ");

    // The stream kept receiving while no query ran.
    repl.send_line("\\d lines");
    repl.expect("Stream \"lines\" (socket)");
    repl.expect("rows received: ");
    repl.expect("brook> ");

    // A background sink over a queue, fed by INSERT while the user types.
    let out = dir.join("out");
    repl.send_line("CREATE STREAM q (word TEXT) WITH (connector = 'queue');");
    repl.expect("CREATE STREAM\r\n");
    repl.expect("brook> ");
    repl.send_line(format!(
        "CREATE SINK counts WITH (connector = 'file', path = '{}') AS SELECT word, COUNT(*) AS n FROM q GROUP BY word;",
        out.display()
    ));
    repl.expect("runs in the background");
    repl.expect("brook> ");
    repl.send_line("INSERT INTO q VALUES ('a'), ('b'), ('a');");
    repl.expect("INSERT\r\n");
    repl.expect("brook> ");
    // Wait until the batch with the rows has been written: the sink writes
    // it under a hidden temporary name and renames it once complete. (Going
    // on when the temporary file appeared, STOP QUERY below came while the
    // sink was still writing and waited for that file, sync included, which
    // a busy disk made outlast the 30 s expectation. Waiting for the disk
    // is this loop's job, with the tests' usual deadline.)
    let deadline = std::time::Instant::now() + DEADLINE;
    let complete_files = || {
        std::fs::read_dir(&out).map_or(0, |entries| {
            entries
                .filter(|entry| {
                    entry
                        .as_ref()
                        .is_ok_and(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
                })
                .count()
        })
    };
    while complete_files() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no complete file from the sink in {DEADLINE:?}: {:?}",
            std::fs::read_dir(&out)
                .map(|entries| entries.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    repl.send_line("\\d");
    repl.expect("Running queries");
    repl.expect("sink counts");
    repl.expect("brook> ");
    repl.send_line("STOP QUERY 2;");
    repl.expect("STOP QUERY\r\n");
    repl.expect("brook> ");

    repl.send_line("\\q");
    repl.expect(expectrl::Eof);

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
    command.args([
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
    ]);
    let mut run = Terminal::spawn(command);
    run.expect("brook: 1 query | ");
    run.expect("rows/s in | lag");
    run.expect(expectrl::Eof);
}

#[test]
fn regression_ctrl_c_cancels_a_one_off_query_that_never_ends_and_the_repl_goes_on() {
    let history = std::env::temp_dir().join(format!("brook-repl-cancel-{}", std::process::id()));
    let mut repl = spawn_repl(&history);
    repl.expect("brook> ");
    repl.send_line(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT COUNT(*) FROM r;",
    );
    // Let it run, then interrupt it: before, Ctrl-C ended the session.
    std::thread::sleep(Duration::from_millis(500));
    repl.send(ControlCode::EndOfText);
    repl.expect("ERROR: canceling statement due to user request");
    repl.expect("brook> ");
    repl.send_line("SELECT 40 + 2 AS answer;");
    repl.expect("| 42     |");
    repl.expect("brook> ");
    repl.send_line("\\q");
    repl.expect(expectrl::Eof);
    let _ = std::fs::remove_file(history);
}
