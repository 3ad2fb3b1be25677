//! Errors as the user sees them: `brook: <where>: <what>`, and for SQL the
//! line with a caret under the column, as psql does. Credentials are
//! masked ([`redact_secrets`]) in all of it: an error may quote a statement
//! whole.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{BrookError, ErrorKind, SqlLocation, error_chain};
use crate::redact::redact_secrets;

/// Set once an internal error or a panic has been reported: the run then
/// exits with the internal-error code, whatever else happened.
static INTERNAL_ERROR_SEEN: AtomicBool = AtomicBool::new(false);

/// `err` and its causes as the user reads them, credentials masked. An
/// internal error says it is a bug and asks for a report, and marks the run
/// as failed by one.
pub(crate) fn describe(err: &BrookError) -> String {
    let text = redact_secrets(&error_chain(err));
    if err.kind() == ErrorKind::Internal {
        INTERNAL_ERROR_SEEN.store(true, Ordering::SeqCst);
        format!("{text} (this is a bug in brook; please report it with this message)")
    } else {
        text
    }
}

/// Whether an internal error or a panic has been reported.
pub(crate) fn internal_error_seen() -> bool {
    INTERNAL_ERROR_SEEN.load(Ordering::SeqCst)
}

/// Makes a panic anywhere (a query's task included) count as an internal
/// error, so that the run can never end with exit code 0 after one.
pub(crate) fn watch_for_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            INTERNAL_ERROR_SEEN.store(true, Ordering::SeqCst);
            eprintln!("brook: internal error: a bug in brook; please report it with what follows");
            previous(info);
        }));
    });
}

/// Formats `err`, raised by a statement of `script` (named `label`).
pub(crate) fn format_error(label: &str, script: &str, err: &BrookError) -> String {
    let Some(location) = err.location() else {
        return format!("brook: {label}: {}", describe(err));
    };
    let text = format!(
        "brook: {label}:{}:{}: {}",
        location.line,
        location.column,
        redact_secrets(&err.to_string())
    );
    with_caret(text, script, err)
}

/// Formats `err` for the REPL, as psql does: `ERROR: what`, then the line
/// typed with a caret under the column.
pub(crate) fn format_repl_error(input: &str, err: &BrookError) -> String {
    match err.location() {
        Some(location) if input.lines().count() > 1 => with_caret(
            format!(
                "ERROR: line {}, column {}: {}",
                location.line,
                location.column,
                redact_secrets(&err.to_string())
            ),
            input,
            err,
        ),
        _ => with_caret(format!("ERROR: {}", describe(err)), input, err),
    }
}

/// Formats the end of piped input inside a statement: `pending`, the input
/// from line `first_line` on, holds a statement whose string, quoted name
/// or comment `err` (located in `pending`) says is still open. Names the
/// line the statement starts at (past leading `--` comments) and, as
/// `brook run` does, the line and column of the reason, with a caret.
pub(crate) fn format_unfinished_input(first_line: u64, pending: &str, err: &BrookError) -> String {
    let skipped = pending
        .lines()
        .take_while(|line| {
            let line = line.trim();
            line.is_empty() || line.starts_with("--")
        })
        .count() as u64;
    let mut text = format!(
        "ERROR: input ended inside a statement starting at line {}; it was not run",
        first_line + skipped
    );
    match err.location() {
        Some(location) => {
            let line = first_line + location.line.saturating_sub(1);
            text.push_str(&format!("\nline {line}, column {}: {err}", location.column));
            caret_at(text, pending, location, first_line)
        }
        None => format!("{text}\n{err}"),
    }
}

/// `text` followed, when `err` has a location in `script`, by the line and
/// a caret under the column.
fn with_caret(text: String, script: &str, err: &BrookError) -> String {
    match err.location() {
        Some(location) => caret_at(text, script, location, 1),
        None => text,
    }
}

/// `text` followed by the line of `script` at `location` and a caret under
/// the column; the line is numbered as if `script` began at line
/// `first_line`.
fn caret_at(mut text: String, script: &str, location: SqlLocation, first_line: u64) -> String {
    let line_index = usize::try_from(location.line.saturating_sub(1)).unwrap_or(usize::MAX);
    if let Some(line) = script.lines().nth(line_index) {
        let number = (first_line + location.line.saturating_sub(1)).to_string();
        let padding = " ".repeat(number.len());
        let column = usize::try_from(location.column.saturating_sub(1)).unwrap_or(0);
        // Masked before it is cut, so that a cut never shows the end of a
        // password without what marks it as one; the caret moves by what
        // masking took out before it.
        let before: String = line.chars().take(column).collect();
        let column = redact_secrets(&before).chars().count();
        let (shown, column) = around_column(&redact_secrets(line), column);
        let caret_offset: String = shown
            .chars()
            .take(column)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        text.push_str(&format!(
            "\n {number} | {shown}\n {padding} | {caret_offset}^"
        ));
    }
    text
}

/// Characters of a long line shown on each side of the caret.
const CONTEXT_CHARS: usize = 60;

/// `line`, cut to the part around `column` (0-based, in characters) when
/// it is long (a generated statement can be one line of megabytes), with
/// `...` where it was cut, and the caret's column in what is shown.
fn around_column(line: &str, column: usize) -> (String, usize) {
    let length = line.chars().count();
    if length <= 2 * CONTEXT_CHARS {
        return (line.to_string(), column);
    }
    let start = column.saturating_sub(CONTEXT_CHARS);
    let end = (column + CONTEXT_CHARS).min(length);
    let mut shown: String = line.chars().skip(start).take(end - start).collect();
    let mut column = column - start;
    if start > 0 {
        shown.insert_str(0, "...");
        column += 3;
    }
    if end < length {
        shown.push_str("...");
    }
    (shown, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parse_sql;

    #[test]
    fn caret_sits_under_the_column() {
        let script = "SELECT 1;\nSELECT * FORM t;";
        let err = parse_sql(script).unwrap_err();
        let text = format_error("bad.sql", script, &err);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("brook: bad.sql:2:10: "), "{text}");
        assert_eq!(lines[1], " 2 | SELECT * FORM t;");
        assert_eq!(lines[2], "   |          ^");
    }

    #[test]
    fn a_password_in_the_line_shown_is_masked_and_the_caret_stays_under_its_column() {
        let script = "SELECT 'postgres://u:hunter2@h/d' AS u, * FORM t;";
        let err = parse_sql(script).unwrap_err();
        let text = format_error("bad.sql", script, &err);
        assert!(!text.contains("hunter2"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            " 1 | SELECT 'postgres://u:***@h/d' AS u, * FORM t;"
        );
        let caret = lines[2].find('^').unwrap();
        assert_eq!(&lines[1][caret..caret + 4], "FORM", "{text}");
    }

    #[test]
    fn regression_a_long_line_is_shown_cut_around_the_caret() {
        let script = format!("SELECT {}1 AS v t;", "1 + ".repeat(10_000));
        let err = parse_sql(&script).unwrap_err();
        let text = format_error("-c", &script, &err);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with(" 1 | ... 1 + 1 + "), "{}", lines[1]);
        assert!(lines[1].ends_with("1 AS v t;"), "{}", lines[1]);
        assert!(lines[1].chars().count() < 140, "{}", lines[1]);
        let caret = lines[2].find('^').unwrap();
        assert_eq!(&lines[1][caret..caret + 1], "t", "{text}");
    }
}
