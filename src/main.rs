//! The `brook` binary: parses arguments and hands over to [`brook::cli`].

use std::process::ExitCode;

use clap::Parser;

/// Stack of the thread that parses, plans and runs statements. DataFusion
/// plans expressions recursively, up to 32 KiB of stack per nesting level
/// in a debug build, so the 1000 levels brook allows
/// ([`brook::cli::MAX_EXPRESSION_DEPTH`]) need about 32 MiB; the default
/// main thread has 8. Only the pages touched are ever committed.
const STATEMENT_STACK_BYTES: usize = 256 << 20;

/// Stack of the runtime's threads, which execute continuous queries batch
/// by batch (evaluating those expressions recursively too); tokio's
/// default is 2 MiB.
const RUNTIME_STACK_BYTES: usize = 64 << 20;

fn main() -> ExitCode {
    brook::memory::keep_freed_memory();
    let args = brook::cli::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(RUNTIME_STACK_BYTES)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("brook: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let statements = std::thread::Builder::new()
        .name("brook".to_string())
        .stack_size(STATEMENT_STACK_BYTES)
        .spawn(move || {
            let code = brook::cli::exec_on(&runtime, args);
            // Tasks still running (a query a second Ctrl-C interrupted, a
            // blocked read of stdin) must not hold the exit up.
            runtime.shutdown_background();
            code
        });
    match statements.map(|thread| thread.join()) {
        Ok(Ok(code)) => code,
        // The panic message is already on stderr.
        Ok(Err(_)) => ExitCode::from(101),
        Err(err) => {
            eprintln!("brook: cannot start the main thread: {err}");
            ExitCode::from(1)
        }
    }
}
