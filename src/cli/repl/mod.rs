//! The interactive shell (`brook` with no arguments, or `brook repl`):
//! SQL against live streams with rustyline's line editing.
//!
//! A statement runs when its input ends with `;`. A continuous `SELECT`
//! runs in the foreground, printing batch after batch; Ctrl-C stops that
//! query only, and cancels any other statement in progress. `CREATE SINK`
//! queries run in the background while the user types. A bad statement,
//! or a line of input that is not UTF-8, prints its error (psql style,
//! with a caret) and the session goes on.

mod helper;
pub(crate) mod meta;

use parking_lot::RwLock;
use std::io::{self, IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config, Editor};

use super::report::{format_error, format_repl_error, format_unfinished_input};
use super::script::read_script;
use super::session::Session;
use crate::context::{SqlOutput, StreamContext};
use crate::error::BrookError;
use crate::query::ContinuousQuery;
use crate::sink::{ConsoleSink, OutputFormat};
use crate::sql::{BrookStatement, ParsedStatement, column_list, parse_sql, sql_type_name};
use helper::{ReplHelper, is_complete, unclosed};
use meta::{HINT, MetaCommand, is_meta_command, parse_meta};

/// How the REPL starts.
#[derive(Debug, Clone)]
pub struct ReplOptions {
    /// Output format of results.
    pub format: OutputFormat,
    /// Rows shown per batch in table format.
    pub max_rows: usize,
    /// The history file: `BROOK_HISTORY`, else `~/.brook_history`.
    pub history: Option<PathBuf>,
}

impl ReplOptions {
    /// The history file users expect: `$BROOK_HISTORY`, else
    /// `$HOME/.brook_history`.
    pub fn default_history() -> Option<PathBuf> {
        match std::env::var_os("BROOK_HISTORY") {
            Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
            _ => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".brook_history")),
        }
    }
}

/// The REPL's state between statements.
struct Repl {
    ctx: StreamContext,
    /// Runs statements, with `SET statement_timeout` and Ctrl-C.
    session: Session,
    format: OutputFormat,
    max_rows: usize,
    timing: bool,
    /// Names for tab completion, refreshed after each statement.
    names: Arc<RwLock<Vec<String>>>,
}

/// The line editor, with the REPL's completion and statement ends.
type LineEditor = Editor<ReplHelper, DefaultHistory>;

/// Runs the REPL until `\q` or Ctrl-D (or the end of piped input);
/// returns the exit code: 0, or 1 when the input could not be read.
pub async fn run(ctx: StreamContext, options: ReplOptions) -> ExitCode {
    let names = Arc::new(RwLock::new(Vec::new()));
    let mut editor = match start_editor(&names, options.history.as_deref()) {
        Ok(editor) => editor,
        Err(code) => return code,
    };
    let mut repl = Repl {
        session: Session::new(ctx.clone()),
        ctx,
        format: options.format,
        max_rows: options.max_rows,
        timing: false,
        names,
    };
    repl.refresh_names().await;
    println!(
        "brook {} - SQL over live streams (batch interval {}). \\? for help, \\q to quit.",
        env!("CARGO_PKG_VERSION"),
        crate::catalog::windows::format_duration(repl.ctx.batch_interval())
    );
    let mut typing = Typing::new();
    let mut exit_code = ExitCode::SUCCESS;
    loop {
        let Ok((returned, line)) = read_line(editor, typing.prompt()).await else {
            eprintln!("brook: the line editor stopped unexpectedly");
            break;
        };
        editor = returned;
        let line = match typing.take(line) {
            Typed::Line(line) => line,
            Typed::Nothing => continue,
            Typed::EndOfInput => {
                if !typing.skip_statement
                    && !repl
                        .run_unfinished(&typing.pending, typing.pending_line)
                        .await
                {
                    exit_code = ExitCode::from(1);
                }
                break;
            }
            Typed::Unreadable => {
                exit_code = ExitCode::from(1);
                break;
            }
        };
        let Some(input) = typing.push(&line) else {
            continue;
        };
        if repl
            .enter(&input, &mut editor, options.history.as_deref())
            .await
            .is_break()
        {
            break;
        }
    }
    repl.finish(exit_code).await
}

/// The line editor, completing `names`, with the history from `history`;
/// exit code 1 when it cannot start.
fn start_editor(
    names: &Arc<RwLock<Vec<String>>>,
    history: Option<&Path>,
) -> Result<LineEditor, ExitCode> {
    let config = Config::builder()
        .max_history_size(10_000)
        .map(|b| b.build());
    let editor = config.and_then(LineEditor::with_config);
    let mut editor = match editor {
        Ok(editor) => editor,
        Err(err) => {
            eprintln!("brook: cannot start the line editor: {err}");
            return Err(ExitCode::from(1));
        }
    };
    editor.set_helper(Some(ReplHelper {
        names: Arc::clone(names),
        multiline: io::stdin().is_terminal(),
    }));
    if let Some(path) = history {
        // A missing history file is the normal first run.
        let _ = editor.load_history(path);
    }
    Ok(editor)
}

/// Reads a line on a blocking thread, which hands the editor back with it.
async fn read_line(
    mut editor: LineEditor,
    prompt: &'static str,
) -> Result<(LineEditor, rustyline::Result<String>), tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        let line = editor.readline(prompt);
        (editor, line)
    })
    .await
}

/// The statement being typed, line by line.
struct Typing {
    /// The input so far, waiting for the `;` that completes it.
    pending: String,
    /// Lines read so far, to name a line that cannot be read.
    lines_read: u64,
    /// The input line `pending` begins at, to name a statement the input
    /// ends inside.
    pending_line: u64,
    /// Set when a line of the statement being typed was unreadable: the
    /// statement is skipped rather than run without that line.
    skip_statement: bool,
}

/// What a read from the line editor gave.
enum Typed {
    /// A line (or several, pasted).
    Line(String),
    /// Nothing to add: read again.
    Nothing,
    /// The input ended (Ctrl-D, or the end of piped input).
    EndOfInput,
    /// The input cannot be read any more.
    Unreadable,
}

impl Typing {
    /// Nothing typed yet; the first statement begins at line 1.
    fn new() -> Self {
        Typing {
            pending: String::new(),
            lines_read: 0,
            pending_line: 1,
            skip_statement: false,
        }
    }

    /// The prompt: a fresh one, or one that continues a statement.
    fn prompt(&self) -> &'static str {
        if self.pending.is_empty() {
            "brook> "
        } else {
            "  ...> "
        }
    }

    /// Counts what the editor read, and handles Ctrl-C and a line that is
    /// not UTF-8 (reported here, as is an input that cannot be read).
    fn take(&mut self, read: rustyline::Result<String>) -> Typed {
        match read {
            Ok(line) => {
                self.lines_read += 1 + line.matches('\n').count() as u64;
                Typed::Line(line)
            }
            Err(ReadlineError::Interrupted) => {
                // Ctrl-C at the prompt: drop what was typed.
                self.pending.clear();
                self.skip_statement = false;
                Typed::Nothing
            }
            Err(ReadlineError::Eof) => Typed::EndOfInput,
            Err(ReadlineError::Io(err)) if err.kind() == io::ErrorKind::InvalidData => {
                // The reader consumed the bad line: report it and go on.
                self.lines_read += 1;
                self.skip_statement = !self.pending.trim().is_empty();
                let skipped = if self.skip_statement {
                    "it and the statement it belongs to are skipped"
                } else {
                    "it is skipped"
                };
                eprintln!(
                    "ERROR: input line {} is not valid UTF-8; {skipped}",
                    self.lines_read
                );
                if !self.skip_statement {
                    self.pending.clear();
                }
                Typed::Nothing
            }
            Err(err) => {
                eprintln!("brook: cannot read input: {err}");
                Typed::Unreadable
            }
        }
    }

    /// Adds a line to the statement being typed; the whole input once the
    /// line completes it, unless the statement is skipped.
    fn push(&mut self, line: &str) -> Option<String> {
        if self.pending.is_empty() {
            self.pending_line = self.lines_read - line.matches('\n').count() as u64;
        } else {
            self.pending.push('\n');
        }
        self.pending.push_str(line);
        if !is_complete(&self.pending) {
            return None;
        }
        let input = std::mem::take(&mut self.pending);
        if std::mem::take(&mut self.skip_statement) {
            return None;
        }
        Some(input)
    }
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

impl Repl {
    /// Runs a complete input, a statement or a meta-command, once it is in
    /// the history (saved to `history`). Breaks on `\q`.
    async fn enter(
        &mut self,
        input: &str,
        editor: &mut LineEditor,
        history: Option<&Path>,
    ) -> ControlFlow<()> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            println!("{HINT}");
            return ControlFlow::Continue(());
        }
        // The history file keeps no passwords (connection URLs show `***`).
        let _ = editor.add_history_entry(crate::redact::redact_secrets(trimmed));
        if let Some(path) = history
            && let Err(err) = editor.save_history(path)
        {
            eprintln!("brook: cannot write history to {}: {err}", path.display());
        }
        if is_meta_command(trimmed) {
            match parse_meta(trimmed) {
                Ok(MetaCommand::Quit) => return ControlFlow::Break(()),
                Ok(command) => self.meta(command).await,
                Err(message) => eprintln!("ERROR: {message}"),
            }
        } else {
            self.run_input(input, None).await;
        }
        self.refresh_names().await;
        ControlFlow::Continue(())
    }

    /// Ends the session: background queries run what their streams have
    /// received through a last batch, and their sinks finish their files,
    /// before brook exits. `exit_code` unless a sink fails.
    async fn finish(self, exit_code: ExitCode) -> ExitCode {
        let sinks = self.ctx.sink_names();
        if !sinks.is_empty() {
            println!(
                "Finishing {} ({})...",
                plural(sinks.len(), "sink"),
                sinks.join(", ")
            );
        }
        self.ctx.close_queues();
        self.ctx.finish_queries();
        match self.ctx.wait_for_sinks().await {
            Ok(()) => exit_code,
            Err(err) => {
                eprintln!("brook: {}", crate::cli::report::describe(&err));
                ExitCode::from(1)
            }
        }
    }

    /// Runs the statements of `input`; stops at the first error. `file`
    /// names the script for errors when it came from `\i`.
    async fn run_input(&mut self, input: &str, file: Option<&Path>) {
        let report = |err: &BrookError| match file {
            Some(path) => eprintln!("{}", format_error(&path.display().to_string(), input, err)),
            None => eprintln!("{}", format_repl_error(input, err)),
        };
        let statements = match parse_sql(input) {
            Ok(statements) => statements,
            Err(err) => return report(&err),
        };
        for statement in &statements {
            let started = Instant::now();
            // Ctrl-C cancels the statement (a one-off query that never
            // ends, say); a continuous query has its own Ctrl-C below.
            let interrupted = async {
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            match self.session.execute(statement, interrupted).await {
                Ok(SqlOutput::Done) => {
                    println!("{}", self.done_message(statement));
                    self.print_timing(started);
                }
                Ok(SqlOutput::Rows { schema, batches }) => {
                    let mut sink = ConsoleSink::new(self.format, self.max_rows, false);
                    if let Err(err) = sink.write_rows(&mut io::stdout().lock(), &schema, &batches) {
                        eprintln!("brook: cannot write output: {err}");
                    }
                    self.print_timing(started);
                }
                Ok(SqlOutput::Query(query)) => self.run_foreground(query).await,
                Err(err) => return report(&err),
            }
        }
    }

    /// Runs `pending`, what the input held after its last complete
    /// statement (piped input, say, whose last statement has no `;`),
    /// beginning at input line `first_line`. When only the `;` is missing
    /// it runs, as `brook run` runs a script's last statement; when a
    /// string, quoted name or comment is still open it is reported and not
    /// run, and the result is `false` (brook then exits 1).
    async fn run_unfinished(&mut self, pending: &str, first_line: u64) -> bool {
        match unclosed(pending) {
            None => {
                self.run_input(pending, None).await;
                true
            }
            Some(err) => {
                eprintln!("{}", format_unfinished_input(first_line, pending, &err));
                false
            }
        }
    }

    /// What a statement without rows prints, like psql's command tags.
    fn done_message(&self, statement: &ParsedStatement) -> String {
        match &statement.statement {
            BrookStatement::CreateSink(create) => {
                let id = self
                    .ctx
                    .running_queries()
                    .into_iter()
                    .find(|q| q.output == format!("sink {}", create.name))
                    .map(|q| q.id);
                match id {
                    Some(id) => format!(
                        "CREATE SINK: query {id} runs in the background (SHOW QUERIES; STOP QUERY {id})"
                    ),
                    None => "CREATE SINK".to_string(),
                }
            }
            _ => {
                let words: Vec<String> = statement
                    .sql
                    .split_whitespace()
                    .take(3)
                    .map(str::to_uppercase)
                    .collect();
                let tag_words = match words.first().map(String::as_str) {
                    Some("CREATE") if words.get(1).is_some_and(|w| w == "EXTERNAL") => 3,
                    Some("CREATE" | "DROP" | "STOP") => 2,
                    _ => 1,
                };
                words[..tag_words.min(words.len())].join(" ")
            }
        }
    }

    fn print_timing(&self, started: Instant) {
        if self.timing {
            println!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
        }
    }

    /// Prints a continuous query's batches until it ends or Ctrl-C.
    async fn run_foreground(&mut self, mut query: ContinuousQuery) {
        let id = query.id();
        println!("Query {id} runs every batch; Ctrl-C stops it.");
        let mut sink = ConsoleSink::new(self.format, self.max_rows, false);
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        let mut stopped = false;
        loop {
            tokio::select! {
                next = query.next() => match next {
                    None => break,
                    Some(Ok(output)) => {
                        let written = sink.write_batch(
                            &mut io::stdout().lock(),
                            &mut io::stderr().lock(),
                            &output,
                        );
                        if let Err(err) = written {
                            eprintln!("brook: cannot write output: {err}");
                            query.stop();
                        }
                    }
                    Some(Err(err @ BrookError::BatchFailed { .. })) => {
                        eprintln!("ERROR: query {id}: {}", crate::cli::report::describe(&err));
                    }
                    Some(Err(err)) => {
                        eprintln!("ERROR: query {id}: {}", crate::cli::report::describe(&err));
                        break;
                    }
                },
                _ = &mut interrupted, if !stopped => {
                    stopped = true;
                    query.stop();
                }
            }
        }
        let batches = query.stats().batches;
        let plural = if batches == 1 { "" } else { "es" };
        if stopped {
            println!("Query {id} stopped after {batches} batch{plural}.");
        } else {
            println!("Query {id} ended after {batches} batch{plural}: its streams ended.");
        }
        let _ = io::stdout().flush();
    }

    async fn meta(&mut self, command: MetaCommand) {
        match command {
            MetaCommand::Help => println!("{}", meta::help()),
            MetaCommand::Quit => {}
            MetaCommand::Timing(on) => {
                self.timing = on.unwrap_or(!self.timing);
                println!("Timing is {}.", if self.timing { "on" } else { "off" });
            }
            MetaCommand::Format(None) => println!("Output format is {:?}.", self.format),
            MetaCommand::Format(Some(format)) => {
                self.format = format;
                println!("Output format is {format:?}.");
            }
            MetaCommand::MaxRows(None) => println!("Showing at most {} rows.", self.max_rows),
            MetaCommand::MaxRows(Some(rows)) => {
                self.max_rows = rows;
                println!("Showing at most {rows} rows.");
            }
            MetaCommand::Include(path) => match read_script(&path) {
                Ok(text) => Box::pin(self.run_input(&text, Some(&path))).await,
                Err(message) => eprintln!("ERROR: {message}"),
            },
            MetaCommand::Describe(None) => self.describe_all().await,
            MetaCommand::Describe(Some(name)) => self.describe(&name).await,
        }
    }

    fn print_rows(&self, title: &str, schema: &Arc<Schema>, batches: &[RecordBatch]) {
        println!("{title}");
        let mut sink = ConsoleSink::new(self.format, usize::MAX, false);
        if let Err(err) = sink.write_rows(&mut io::stdout().lock(), schema, batches) {
            eprintln!("brook: cannot write output: {err}");
        }
    }

    /// `\d`: streams, tables and running queries.
    async fn describe_all(&self) {
        for (title, sql) in [
            ("Streams", "SHOW STREAMS"),
            ("Running queries", "SHOW QUERIES"),
        ] {
            if let Ok(SqlOutput::Rows { schema, batches }) = self.ctx.sql(sql).await {
                self.print_rows(title, &schema, &batches);
            }
        }
        let tables = self.tables().await;
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("columns", DataType::Utf8, false),
        ]));
        let column = |values: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(values)) };
        if let Ok(batch) = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                column(tables.iter().map(|(n, _)| n.clone()).collect()),
                column(tables.iter().map(|(_, c)| c.clone()).collect()),
            ],
        ) {
            self.print_rows("Tables", &schema, &[batch]);
        }
    }

    /// `\d NAME`: one stream's or table's columns, options and counts.
    async fn describe(&self, name: &str) {
        let column_rows = |schema: &Schema| -> (Arc<Schema>, Vec<RecordBatch>) {
            let out = Arc::new(Schema::new(vec![
                Field::new("column", DataType::Utf8, false),
                Field::new("type", DataType::Utf8, false),
            ]));
            let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            let types: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| sql_type_name(f.data_type()))
                .collect();
            let batch = RecordBatch::try_new(
                Arc::clone(&out),
                vec![
                    Arc::new(StringArray::from(names)),
                    Arc::new(StringArray::from(types)),
                ],
            );
            (out, batch.into_iter().collect())
        };
        if let Some(stream) = self.ctx.streams().into_iter().find(|s| s.name == name) {
            let (schema, batches) = column_rows(&stream.schema);
            self.print_rows(
                &format!("Stream \"{}\" ({})", stream.name, stream.connector),
                &schema,
                &batches,
            );
            println!("options: {}", stream.options);
            println!(
                "state: {} | rows received: {} | rows dropped: {} | rows pending: {}",
                stream.state, stream.rows_received, stream.rows_dropped, stream.rows_pending
            );
            return;
        }
        match self.ctx.session().table_provider(name).await {
            Ok(table) => {
                let (schema, batches) = column_rows(&table.schema());
                self.print_rows(&format!("Table \"{name}\""), &schema, &batches);
            }
            Err(_) => eprintln!("ERROR: no stream or table named '{name}' (\\d lists them)"),
        }
    }

    /// Static tables of the default schema, with their columns.
    async fn tables(&self) -> Vec<(String, String)> {
        let streams = self.ctx.stream_names();
        let session = self.ctx.session();
        let Some(schema) = session
            .catalog(&session.state().config().options().catalog.default_catalog)
            .and_then(|c| c.schema(&session.state().config().options().catalog.default_schema))
        else {
            return Vec::new();
        };
        let mut tables = Vec::new();
        let mut names = schema.table_names();
        names.sort();
        for name in names {
            if streams.contains(&name) {
                continue;
            }
            if let Ok(Some(table)) = schema.table(&name).await {
                tables.push((name, column_list(&table.schema())));
            }
        }
        tables
    }

    /// Stream, table and column names for tab completion.
    async fn refresh_names(&self) {
        let mut names = Vec::new();
        for stream in self.ctx.streams() {
            names.push(stream.name.clone());
            names.extend(stream.schema.fields().iter().map(|f| f.name().clone()));
        }
        for (table, _) in self.tables().await {
            if let Ok(provider) = self.ctx.session().table_provider(table.as_str()).await {
                names.extend(provider.schema().fields().iter().map(|f| f.name().clone()));
            }
            names.push(table);
        }
        names.sort();
        names.dedup();
        *self.names.write() = names;
    }
}
