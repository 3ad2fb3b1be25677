//! The `brook` binary: parses arguments and hands over to [`brook::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = brook::cli::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("brook: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(brook::cli::exec(args))
}
