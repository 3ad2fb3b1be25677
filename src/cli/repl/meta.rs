//! The REPL's meta-commands, with psql's backslash spelling and the duckdb
//! / sqlite dot spelling where the tools differ.

use std::path::PathBuf;

use crate::sink::OutputFormat;

/// A meta-command typed at the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MetaCommand {
    /// `\?`, `.help`.
    Help,
    /// `\q`, `.quit`, `.exit`, `quit`, `exit`.
    Quit,
    /// `\d` (everything), `\d NAME` (one stream or table).
    Describe(Option<String>),
    /// `\timing [on|off]`: toggles, or sets, printing statement times.
    Timing(Option<bool>),
    /// `\i FILE`, `.read FILE`: runs a .sql file.
    Include(PathBuf),
    /// `\format [table|csv|json]`, `.mode`: shows or sets the output format.
    Format(Option<OutputFormat>),
    /// `\maxrows [N]`, `.maxrows`: shows or sets the rows shown per batch.
    MaxRows(Option<usize>),
}

/// What `\?` prints.
pub(crate) const HELP: &str = "\
SQL statements end with ';' and may span lines. A SELECT over a stream runs
batch after batch until Ctrl-C, which stops that query and returns here.

  CREATE STREAM name (cols) WITH (connector = 'socket' | 'queue', ...)
  SELECT ... FROM stream | HOP(s, slide, size) | TUMBLE(s, size) | RUNNING(s)
  CREATE SINK name WITH (connector = 'file', path = 'out/', format = 'csv') AS SELECT ...
  INSERT INTO queue_stream VALUES (...)
  SHOW STREAMS | SHOW QUERIES | STOP QUERY n | DROP SINK name | DESCRIBE name
  EXPLAIN SELECT ...              SET batch_interval = '1 second'

Meta-commands:
  \\? .help              this help
  \\q .quit  Ctrl-D      quit
  \\d                    streams, tables and running queries
  \\d NAME               a stream's or table's columns, options and counts
  \\timing [on|off]      show how long each statement takes
  \\i FILE  .read FILE   run the statements of a .sql file
  \\format table|csv|json  output format (.mode too)
  \\maxrows N            rows shown per batch in table format
Ctrl-C at the prompt clears the line.";

/// What an empty line prints.
pub(crate) const HINT: &str =
    "Type SQL ending with ';' (it may span lines), \\? for help, \\q to quit.";

/// Whether `text` (trimmed) is a meta-command rather than SQL.
pub(crate) fn is_meta_command(text: &str) -> bool {
    let word = text.split_whitespace().next().unwrap_or_default();
    text.starts_with('\\')
        || matches!(word, "quit" | "exit")
        || (word.starts_with('.')
            && word[1..].chars().all(|c| c.is_ascii_alphabetic())
            && word.len() > 1)
}

/// Parses a meta-command; the error says what is wrong and what to type.
pub(crate) fn parse_meta(text: &str) -> Result<MetaCommand, String> {
    let text = text.trim().trim_end_matches(';').trim();
    let mut words = text.split_whitespace();
    let command = words.next().unwrap_or_default();
    let argument: Vec<&str> = words.collect();
    let argument = (!argument.is_empty()).then(|| argument.join(" "));
    match command {
        "\\?" | "\\h" | "\\help" | ".help" | "help" => Ok(MetaCommand::Help),
        "\\q" | "\\quit" | ".quit" | ".exit" | "quit" | "exit" => Ok(MetaCommand::Quit),
        "\\d" | "\\dt" | ".tables" | ".schema" => Ok(MetaCommand::Describe(argument)),
        "\\timing" | ".timer" => match argument.as_deref() {
            None => Ok(MetaCommand::Timing(None)),
            Some("on") => Ok(MetaCommand::Timing(Some(true))),
            Some("off") => Ok(MetaCommand::Timing(Some(false))),
            Some(other) => Err(format!("\\timing takes on or off, not '{other}'")),
        },
        "\\i" | "\\include" | ".read" => match argument {
            Some(path) => Ok(MetaCommand::Include(PathBuf::from(path))),
            None => Err(format!(
                "{command} needs a file: {command} queries/wordcount.sql"
            )),
        },
        "\\format" | "\\pset" | ".mode" => match argument.as_deref() {
            None => Ok(MetaCommand::Format(None)),
            Some(name) => name
                .trim_start_matches("format ")
                .parse::<OutputFormat>()
                .map(|f| MetaCommand::Format(Some(f))),
        },
        "\\maxrows" | ".maxrows" => match argument.as_deref() {
            None => Ok(MetaCommand::MaxRows(None)),
            Some(n) => n
                .parse::<usize>()
                .map(|n| MetaCommand::MaxRows(Some(n)))
                .map_err(|_| format!("{command} takes a number of rows, not '{n}'")),
        },
        other => Err(format!("unknown meta-command '{other}'; \\? lists them")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_parse() {
        assert_eq!(parse_meta("\\q"), Ok(MetaCommand::Quit));
        assert_eq!(parse_meta(".quit"), Ok(MetaCommand::Quit));
        assert_eq!(parse_meta(".help"), Ok(MetaCommand::Help));
        assert_eq!(
            parse_meta("\\d words"),
            Ok(MetaCommand::Describe(Some("words".into())))
        );
        assert_eq!(
            parse_meta("\\timing on"),
            Ok(MetaCommand::Timing(Some(true)))
        );
        assert_eq!(
            parse_meta("\\format csv"),
            Ok(MetaCommand::Format(Some(OutputFormat::Csv)))
        );
        assert_eq!(parse_meta("\\maxrows 5"), Ok(MetaCommand::MaxRows(Some(5))));
        assert!(parse_meta("\\maxrows many").is_err());
        assert!(
            parse_meta("\\x")
                .unwrap_err()
                .contains("unknown meta-command")
        );
        assert!(is_meta_command("\\d"));
        assert!(is_meta_command(".quit"));
        assert!(!is_meta_command("SELECT 1;"));
        assert!(!is_meta_command(".5 + 1;"));
    }
}
