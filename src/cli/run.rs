//! Running scripts: statements in order, continuous queries printed batch by
//! batch while later statements run, then waiting for the queries to end.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::CommandFactory;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::args::{Args, Command};
use super::repl::ReplOptions;
use super::report::{self, format_error};
use super::script::read_script;
use super::session::Session;
use super::status::StatusLine;
use crate::context::{SqlOutput, StreamContext};
use crate::error::BrookError;
use crate::query::ContinuousQuery;
use crate::sink::ConsoleSink;
use crate::sql::parse_sql;

/// Exit code for a query or input error.
const EXIT_ERROR: u8 = 1;
/// Exit code for a usage error.
const EXIT_USAGE: u8 = 2;

/// Exit code after an internal error (a bug in brook): sysexits' EX_SOFTWARE.
const EXIT_INTERNAL: u8 = 70;
/// Exit code after a second Ctrl-C or SIGTERM: 128 + SIGINT, as shells do.
const EXIT_INTERRUPTED: u8 = 130;

/// [`exec`] run to its end on `runtime`. The binary calls this rather than
/// `runtime.block_on(exec(args))` so that the futures `exec` awaits are
/// compiled once, here, and not again in the binary's crate (which took
/// about 90 s of a release build).
pub fn exec_on(runtime: &tokio::runtime::Runtime, args: Args) -> ExitCode {
    runtime.block_on(exec(args))
}

/// Runs what the arguments ask for and returns the process's exit code:
/// 0, [`EXIT_ERROR`] for an error in a statement, its input or a system it
/// talks to, [`EXIT_USAGE`], or [`EXIT_INTERNAL`] once an internal error
/// (a bug, a panic) was reported. A second signal ends the run at once.
pub async fn exec(args: Args) -> ExitCode {
    report::watch_for_panics();
    let interrupted = Arc::new(Notify::new());
    let code = tokio::select! {
        code = exec_args(args, Arc::clone(&interrupted)) => code,
        _ = interrupted.notified() => {
            let _ = io::stderr().write_all(b"brook: interrupted\n");
            ExitCode::from(EXIT_INTERRUPTED)
        }
    };
    if report::internal_error_seen() {
        ExitCode::from(EXIT_INTERNAL)
    } else {
        code
    }
}

/// [`exec`] without the signal and internal-error handling around it.
async fn exec_args(args: Args, interrupted: Arc<Notify>) -> ExitCode {
    let scripts = match gather_scripts(&args) {
        Ok(scripts) => scripts,
        Err(code) => return code,
    };
    if let Some(Command::Checkpoints { dir }) = &args.command {
        return list_checkpoints(dir);
    }
    let repl_asked = matches!(args.command, Some(Command::Repl));
    if repl_asked && !scripts.is_empty() {
        let _ = Args::command().print_help();
        eprintln!("\nbrook: repl takes no -c or -f; run the file inside it with \\i FILE");
        return ExitCode::from(EXIT_USAGE);
    }
    // The dashboard is served for as long as the shell runs, or until the
    // scripts' run ends: brook does not stay up for the page.
    let (ctx, _dashboard) = match open_context(&args).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    if let Some(Command::Serve {
        pg,
        password_file,
        max_connections,
        allow_files,
        tls_cert,
        tls_key,
    }) = &args.command
    {
        let options = super::serve::ServeOptions {
            address: *pg,
            password_file: password_file.clone(),
            max_connections: *max_connections,
            allow_files: *allow_files,
            tls: tls_cert.clone().zip(tls_key.clone()),
        };
        return serve(ctx, &options, &scripts, interrupted).await;
    }
    if scripts.is_empty() {
        let options = ReplOptions {
            format: args.format,
            max_rows: args.max_rows,
            history: ReplOptions::default_history(),
        };
        return super::repl::run(ctx, options).await;
    }
    let mut run = ScriptRun::start(&args, &ctx, interrupted);
    run.run_scripts(&scripts).await;
    run.finish().await
}

/// The scripts to run, labelled for error messages: the files (`run FILE`
/// first, then each `-f`), then each `-c`. A file that cannot be read ends
/// the run with [`EXIT_ERROR`].
fn gather_scripts(args: &Args) -> Result<Vec<(String, String)>, ExitCode> {
    let mut scripts = Vec::new();
    let mut files = args.files.clone();
    if let Some(Command::Run { file }) = &args.command {
        files.insert(0, file.clone());
    }
    for file in &files {
        match read_script(file) {
            Ok(text) => scripts.push((file.display().to_string(), text)),
            Err(message) => {
                eprintln!("brook: {message}");
                return Err(ExitCode::from(EXIT_ERROR));
            }
        }
    }
    for (index, command) in args.commands.iter().enumerate() {
        let label = if args.commands.len() == 1 {
            "-c".to_string()
        } else {
            format!("-c#{}", index + 1)
        };
        scripts.push((label, command.clone()));
    }
    Ok(scripts)
}

/// `brook serve`: runs the scripts' statements, then serves clients until
/// a signal; the background queries then run a final batch.
async fn serve(
    ctx: StreamContext,
    options: &super::serve::ServeOptions,
    scripts: &[(String, String)],
    interrupted: Arc<Notify>,
) -> ExitCode {
    let listener = match super::serve::bind(options).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("brook: {}", report::describe(&err));
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let mut session = Session::new(ctx.clone());
    for (label, text) in scripts {
        let statements = match crate::sql::parse_sql(text) {
            Ok(statements) => statements,
            Err(err) => {
                eprintln!("brook: {label}: {}", report::describe(&err));
                return ExitCode::from(EXIT_ERROR);
            }
        };
        for statement in &statements {
            if let Err(err) = session.execute(statement, std::future::pending()).await {
                eprintln!("brook: {label}: {}", report::describe(&err));
                return ExitCode::from(EXIT_ERROR);
            }
        }
    }
    eprintln!(
        "brook: serving the PostgreSQL protocol on {} (psql -h {} -p {})",
        options.address,
        options.address.ip(),
        options.address.port()
    );
    let stop = CancellationToken::new();
    spawn_signal_handler(stop.clone(), interrupted);
    let served = super::serve::serve(ctx.clone(), listener, options, stop.cancelled()).await;
    ctx.finish_queries();
    let _ = tokio::time::timeout(Duration::from_secs(10), ctx.wait_for_sinks()).await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("brook: {}", report::describe(&err));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `brook checkpoints DIR`: prints what each checkpoint in `dir` holds.
fn list_checkpoints(dir: &Path) -> ExitCode {
    match crate::checkpoint::describe_dir(dir) {
        Ok(lines) if lines.is_empty() => {
            println!("no checkpoints in {}", dir.display());
            ExitCode::SUCCESS
        }
        Ok(lines) => {
            println!("query\tbatch\twritten\tsize\tstate\tpositions\tsql");
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("brook: {}", report::describe(&err));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The context the arguments describe, with the dashboard when one was asked
/// for (served for as long as the caller holds it).
async fn open_context(
    args: &Args,
) -> Result<(StreamContext, Option<crate::ui::UiHandle>), ExitCode> {
    let ctx = StreamContext::new(args.batch_interval.unwrap_or(Duration::from_secs(1)));
    if let Err(err) = ctx.set_checkpoint_dir(args.checkpoint.clone()) {
        eprintln!("brook: {}", report::describe(&err));
        return Err(ExitCode::from(EXIT_ERROR));
    }
    let dashboard = serve_dashboard(&ctx, args.ui).await?;
    Ok((ctx, dashboard))
}

/// A run of scripts: the session their statements run in, and what the
/// continuous queries they start share while their printers run.
struct ScriptRun<'a> {
    args: &'a Args,
    ctx: &'a StreamContext,
    // Declared in the reverse of the order they are made in, so that they
    // are dropped in the order they always were.
    status: StatusLine,
    printers: JoinSet<()>,
    failed: Arc<AtomicBool>,
    /// One token for every way a run is asked to stop: a signal,
    /// --duration, a closed stdout.
    stop: CancellationToken,
    session: Session,
}

impl<'a> ScriptRun<'a> {
    /// Opens the session and starts listening for signals.
    fn start(args: &'a Args, ctx: &'a StreamContext, interrupted: Arc<Notify>) -> Self {
        let session = Session::new(ctx.clone());
        let stop = CancellationToken::new();
        spawn_signal_handler(stop.clone(), interrupted);
        let failed = Arc::new(AtomicBool::new(false));
        let printers = JoinSet::new();
        let status = StatusLine::start(ctx, args.quiet);
        ScriptRun {
            args,
            ctx,
            status,
            printers,
            failed,
            stop,
            session,
        }
    }

    /// Runs the scripts' statements in order, until one fails or the output
    /// is closed.
    async fn run_scripts(&mut self, scripts: &[(String, String)]) {
        for (label, text) in scripts {
            if self.run_script(label, text).await.is_break() {
                break;
            }
        }
    }

    /// Runs one script's statements: rows are printed, continuous queries
    /// printed by a task of their own. Breaks when no later statement should
    /// run.
    async fn run_script(&mut self, label: &str, text: &str) -> ControlFlow<()> {
        let args = self.args;
        let statements = match parse_sql(text) {
            Ok(statements) => statements,
            Err(err) => {
                eprintln!("{}", format_error(label, text, &err));
                self.failed.store(true, Ordering::SeqCst);
                return ControlFlow::Break(());
            }
        };
        for statement in &statements {
            // A signal (or a closed stdout) also cancels a one-off
            // statement in progress, such as a query that never ends.
            let stopped = self.stop.clone().cancelled_owned();
            match self.session.execute(statement, stopped).await {
                Ok(SqlOutput::Done) => {}
                Ok(SqlOutput::Rows { schema, batches }) => {
                    let mut sink = ConsoleSink::new(args.format, args.max_rows, args.quiet);
                    if let Err(err) = sink.write_rows(&mut io::stdout().lock(), &schema, &batches) {
                        if err.kind() == io::ErrorKind::BrokenPipe {
                            return ControlFlow::Break(());
                        }
                        eprintln!("brook: cannot write output: {err}");
                    }
                }
                Ok(SqlOutput::Query(query)) => {
                    let sink = ConsoleSink::new(args.format, args.max_rows, args.quiet);
                    self.printers.spawn(print_query(
                        query,
                        sink,
                        self.status.clone(),
                        args.batches,
                        self.stop.clone(),
                        Arc::clone(&self.failed),
                    ));
                }
                Err(err) => {
                    eprintln!("{}", format_error(label, text, &err));
                    self.failed.store(true, Ordering::SeqCst);
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Waits for the queries to end (or be stopped) and their sinks to
    /// finish writing; the run's exit code.
    async fn finish(mut self) -> ExitCode {
        // A stop request (a signal, --duration, a closed stdout) also ends
        // the sinks' queries, through one final batch.
        {
            let ctx = self.ctx.clone();
            let stop = self.stop.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                ctx.finish_queries();
            });
        }
        if self.failed.load(Ordering::SeqCst) {
            self.printers.abort_all();
        } else {
            // Queues created by the script end once drained, so their queries end.
            self.ctx.close_queues();
            if let Some(duration) = self.args.duration {
                let stop = self.stop.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(duration).await;
                    stop.cancel();
                });
            }
        }
        while self.printers.join_next().await.is_some() {}
        self.status.around(|| ());
        // A sink that failed to write a batch fails the run.
        if !self.failed.load(Ordering::SeqCst)
            && let Err(err) = self.ctx.wait_for_sinks().await
        {
            eprintln!("brook: {}", report::describe(&err));
            self.failed.store(true, Ordering::SeqCst);
        }
        if self.failed.load(Ordering::SeqCst) {
            ExitCode::from(EXIT_ERROR)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Serves the dashboard on `addr` when one was asked for, printing its
/// URL. An address brook cannot listen on ends the run before anything
/// else runs ([`EXIT_ERROR`]): a user who asked for the dashboard would
/// rather know than miss it.
async fn serve_dashboard(
    ctx: &StreamContext,
    addr: Option<std::net::SocketAddr>,
) -> Result<Option<crate::ui::UiHandle>, ExitCode> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    match crate::ui::serve(ctx, addr).await {
        Ok(dashboard) => {
            eprintln!("brook: dashboard at {}", dashboard.url());
            Ok(Some(dashboard))
        }
        Err(err) => {
            eprintln!("brook: {}", report::describe(&err));
            Err(ExitCode::from(EXIT_ERROR))
        }
    }
}

/// Prints a query's batches until it ends, `max_batches` are done, or a stop
/// is requested (then what has arrived is run as a final batch).
async fn print_query(
    mut query: ContinuousQuery,
    mut sink: ConsoleSink,
    status: StatusLine,
    max_batches: Option<u64>,
    stop: CancellationToken,
    failed: Arc<AtomicBool>,
) {
    let mut stopping = false;
    loop {
        let next = tokio::select! {
            next = query.next() => next,
            _ = stop.cancelled(), if !stopping => {
                // Run what has arrived through one final batch, then end.
                stopping = true;
                query.finish();
                continue;
            }
        };
        let Some(output) = next else {
            return;
        };
        match output {
            Ok(output) => {
                let written = status.around(|| {
                    sink.write_batch(&mut io::stdout().lock(), &mut io::stderr().lock(), &output)
                });
                if let Err(err) = written {
                    if err.kind() != io::ErrorKind::BrokenPipe {
                        eprintln!("brook: cannot write output: {err}");
                        failed.store(true, Ordering::SeqCst);
                    }
                    // Nobody reads the output any more: stop everything quietly.
                    stop.cancel();
                    return;
                }
                if max_batches.is_some_and(|max| output.batch_number >= max) {
                    return;
                }
            }
            Err(err @ BrookError::BatchFailed { .. }) => {
                // The query goes on; the run still ends with exit code 1.
                eprintln!("brook: query {}: {}", query.id(), report::describe(&err));
                failed.store(true, Ordering::SeqCst);
            }
            Err(err) => {
                eprintln!("brook: query {}: {}", query.id(), report::describe(&err));
                failed.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// Ctrl-C or SIGTERM: run what has arrived through a final batch and exit
/// 0; a second signal ends the run at once (through `interrupted`).
fn spawn_signal_handler(stop: CancellationToken, interrupted: Arc<Notify>) {
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            wait_for_signal().await;
            signals += 1;
            if signals > 1 {
                interrupted.notify_one();
                return;
            }
            stop.cancel();
        }
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
