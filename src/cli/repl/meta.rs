//! The REPL's meta-commands: one table ([`META_COMMANDS`]) of spellings
//! (psql's backslash, duckdb / sqlite's dot), arguments and help, from
//! which parsing, `\?` and tab completion all come.

use std::path::PathBuf;

use crate::sink::OutputFormat;

/// A meta-command typed at the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MetaCommand {
    /// Prints the help.
    Help,
    /// Ends the session.
    Quit,
    /// Everything (`None`), or one stream or table.
    Describe(Option<String>),
    /// Toggles (`None`) or sets printing statement times.
    Timing(Option<bool>),
    /// Runs a .sql file.
    Include(PathBuf),
    /// Shows (`None`) or sets the output format.
    Format(Option<OutputFormat>),
    /// Shows (`None`) or sets the rows shown per batch.
    MaxRows(Option<usize>),
}

/// One meta-command as the user sees it.
pub(crate) struct MetaCommandSpec {
    /// Its spellings; `\?` shows the first as the name, the rest as aliases.
    pub names: &'static [&'static str],
    /// Its argument as `\?` shows it; empty when it takes none.
    pub argument: &'static str,
    /// What it does, one line.
    pub help: &'static str,
    /// Reads the argument (`None` when none was typed); `name` is the
    /// spelling used, for error messages.
    parse: fn(name: &str, argument: Option<&str>) -> Result<MetaCommand, String>,
}

/// Every meta-command. Parsing, `\?` and tab completion read this table,
/// so a spelling that works is always listed.
pub(crate) const META_COMMANDS: &[MetaCommandSpec] = &[
    MetaCommandSpec {
        names: &["\\?", "\\h", "\\help", ".help", "help"],
        argument: "",
        help: "this help",
        parse: |_, _| Ok(MetaCommand::Help),
    },
    MetaCommandSpec {
        names: &["\\q", "\\quit", ".quit", ".exit", "quit", "exit"],
        argument: "",
        help: "quit (Ctrl-D too); background sinks run a last batch first",
        parse: |_, _| Ok(MetaCommand::Quit),
    },
    MetaCommandSpec {
        names: &["\\d", "\\dt", ".tables", ".schema"],
        argument: "[NAME]",
        help: "streams, running queries and tables; with NAME, its columns, options and counts",
        parse: |_, argument| Ok(MetaCommand::Describe(argument.map(str::to_string))),
    },
    MetaCommandSpec {
        names: &["\\timing", ".timer"],
        argument: "[on|off]",
        help: "print how long each statement takes",
        parse: parse_timing,
    },
    MetaCommandSpec {
        names: &["\\i", "\\include", ".read"],
        argument: "FILE",
        help: "run the statements of a .sql file",
        parse: parse_include,
    },
    MetaCommandSpec {
        names: &["\\format", "\\pset", ".mode"],
        argument: "[table|csv|json]",
        help: "show or set the output format (\\pset format csv works too)",
        parse: parse_format,
    },
    MetaCommandSpec {
        names: &["\\maxrows", ".maxrows"],
        argument: "[N]",
        help: "show or set the rows shown per batch in table format",
        parse: parse_max_rows,
    },
];

fn parse_timing(name: &str, argument: Option<&str>) -> Result<MetaCommand, String> {
    match argument {
        None => Ok(MetaCommand::Timing(None)),
        Some(other) => match crate::options::parse_bool(other) {
            Some(on) => Ok(MetaCommand::Timing(Some(on))),
            None => Err(format!("{name} takes on or off, not '{other}'")),
        },
    }
}

fn parse_include(name: &str, argument: Option<&str>) -> Result<MetaCommand, String> {
    match argument {
        Some(path) => Ok(MetaCommand::Include(PathBuf::from(path))),
        None => Err(format!("{name} needs a file: {name} queries/wordcount.sql")),
    }
}

fn parse_format(_: &str, argument: Option<&str>) -> Result<MetaCommand, String> {
    match argument {
        None => Ok(MetaCommand::Format(None)),
        Some(format) => format
            .trim_start_matches("format ")
            .parse::<OutputFormat>()
            .map(|f| MetaCommand::Format(Some(f))),
    }
}

fn parse_max_rows(name: &str, argument: Option<&str>) -> Result<MetaCommand, String> {
    match argument {
        None => Ok(MetaCommand::MaxRows(None)),
        Some(rows) => rows
            .parse::<usize>()
            .map(|rows| MetaCommand::MaxRows(Some(rows)))
            .map_err(|_| format!("{name} takes a number of rows, not '{rows}'")),
    }
}

/// SQL help, above the meta-commands in `\?`.
const SQL_HELP: &str = "\
SQL statements end with ';' and may span lines. A SELECT over a stream runs
batch after batch until Ctrl-C, which stops that query and returns here;
Ctrl-C during any other statement cancels it.

  CREATE STREAM name (cols) WITH (connector = 'socket' | 'queue', ...)
  SELECT ... FROM stream | HOP(s, slide, size) | TUMBLE(s, size) | RUNNING(s)
  CREATE SINK name WITH (connector = 'file', path = 'out/', format = 'csv') AS SELECT ...
  INSERT INTO queue_stream VALUES (...)
  SHOW STREAMS | SHOW QUERIES | STOP QUERY n | DROP SINK name | DESCRIBE name
  EXPLAIN SELECT ...              SET batch_interval = '1 second'
  SET statement_timeout = '30s'   (0: none) cancels a longer one-off statement";

/// What `\?` prints: the SQL help, then every meta-command of
/// [`META_COMMANDS`] with its aliases.
pub(crate) fn help() -> String {
    let usage = |spec: &MetaCommandSpec| {
        if spec.argument.is_empty() {
            spec.names[0].to_string()
        } else {
            format!("{} {}", spec.names[0], spec.argument)
        }
    };
    let width = META_COMMANDS
        .iter()
        .map(|spec| usage(spec).len())
        .max()
        .unwrap_or(0);
    let mut text = format!("{SQL_HELP}\n\nMeta-commands:\n");
    for spec in META_COMMANDS {
        text.push_str(&format!("  {:width$}  {}", usage(spec), spec.help));
        if spec.names.len() > 1 {
            text.push_str(&format!(" (also {})", spec.names[1..].join(" ")));
        }
        text.push('\n');
    }
    text.push_str("Ctrl-C at the prompt clears the line.");
    text
}

/// What an empty line prints.
pub(crate) const HINT: &str =
    "Type SQL ending with ';' (it may span lines), \\? for help, \\q to quit.";

/// The spec one of whose spellings is `name`.
fn find(name: &str) -> Option<&'static MetaCommandSpec> {
    META_COMMANDS.iter().find(|spec| spec.names.contains(&name))
}

/// Whether `text` (trimmed) is a meta-command rather than SQL: it starts
/// with `\`, with `.` and a word (so `.5 + 1;` stays SQL), or is a
/// listed bare word such as `quit`.
pub(crate) fn is_meta_command(text: &str) -> bool {
    let word = text.split_whitespace().next().unwrap_or_default();
    let dot_word = word.len() > 1
        && word.starts_with('.')
        && word[1..].chars().all(|c| c.is_ascii_alphabetic());
    text.starts_with('\\') || dot_word || find(word.trim_end_matches(';')).is_some()
}

/// Parses a meta-command; the error says what is wrong and what to type.
pub(crate) fn parse_meta(text: &str) -> Result<MetaCommand, String> {
    let text = text.trim().trim_end_matches(';').trim();
    let mut words = text.split_whitespace();
    let name = words.next().unwrap_or_default();
    let argument = words.collect::<Vec<_>>().join(" ");
    let argument = (!argument.is_empty()).then_some(argument.as_str());
    match find(name) {
        Some(spec) => (spec.parse)(name, argument),
        None => Err(format!("unknown meta-command '{name}'; \\? lists them")),
    }
}

/// The spellings tab completion offers after `\` or `.`.
pub(crate) fn completions(prefix: &str) -> impl Iterator<Item = &'static str> + '_ {
    META_COMMANDS
        .iter()
        .flat_map(|spec| spec.names.iter().copied())
        .filter(move |name| name.starts_with(prefix))
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
        assert_eq!(
            parse_meta("\\pset format json"),
            Ok(MetaCommand::Format(Some(OutputFormat::Json)))
        );
        assert_eq!(parse_meta("\\maxrows 5"), Ok(MetaCommand::MaxRows(Some(5))));
        assert_eq!(
            parse_meta("\\maxrows many"),
            Err("\\maxrows takes a number of rows, not 'many'".into())
        );
        assert_eq!(
            parse_meta(".timer maybe"),
            Err(".timer takes on or off, not 'maybe'".into())
        );
        assert!(
            parse_meta("\\x")
                .unwrap_err()
                .contains("unknown meta-command")
        );
        assert!(is_meta_command("\\d"));
        assert!(is_meta_command(".quit"));
        assert!(is_meta_command("quit"));
        assert!(!is_meta_command("SELECT 1;"));
        assert!(!is_meta_command(".5 + 1;"));
    }

    #[test]
    fn regression_help_lists_every_spelling_that_parses() {
        let help = help();
        for spec in META_COMMANDS {
            for name in spec.names {
                assert!(
                    help.contains(&format!(" {name}")),
                    "{name} missing from:\n{help}"
                );
                // Every listed spelling parses (with an argument where one
                // is needed).
                let typed = if spec.argument == "FILE" {
                    format!("{name} x.sql")
                } else {
                    name.to_string()
                };
                assert!(parse_meta(&typed).is_ok(), "{typed}");
            }
        }
        for once_unlisted in ["\\dt", ".tables", ".timer", "\\pset"] {
            assert!(help.contains(once_unlisted), "{once_unlisted}");
        }
    }

    #[test]
    fn the_readme_lists_every_meta_command() {
        let readme = include_str!("../../../README.md");
        for spec in META_COMMANDS {
            for name in spec.names {
                assert!(
                    readme.contains(&format!("`{name}")),
                    "README's meta-command table lacks {name}"
                );
            }
        }
    }
}
