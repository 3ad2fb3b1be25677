//! The `brook` command line: arguments, running scripts, printing results,
//! and the interactive shell ([`repl`]).
//! `main.rs` only parses arguments and calls [`exec`].

mod args;
pub mod repl;
pub(crate) mod report;
mod run;
mod script;
pub mod serve;
mod session;
mod status;

pub use args::{Args, Command};
pub use run::{exec, exec_on};
pub use script::MAX_SCRIPT_BYTES;
pub use session::MAX_EXPRESSION_DEPTH;
