//! Line editing help for the REPL: when a statement is complete (at `;`),
//! and tab completion of keywords, meta-commands, and stream, table and
//! column names.

use parking_lot::RwLock;
use std::sync::Arc;

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, TokenizerError};

use crate::error::{BrookError, SqlLocation};

/// SQL keywords offered by tab completion.
const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "HAVING",
    "LIMIT",
    "AS",
    "AND",
    "OR",
    "NOT",
    "NULL",
    "IS",
    "IN",
    "LIKE",
    "BETWEEN",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "DISTINCT",
    "COUNT",
    "SUM",
    "MIN",
    "MAX",
    "AVG",
    "JOIN",
    "LEFT",
    "INNER",
    "ON",
    "UNION",
    "ALL",
    "ASC",
    "DESC",
    "INSERT",
    "INTO",
    "VALUES",
    "CREATE",
    "STREAM",
    "TABLE",
    "SINK",
    "EXTERNAL",
    "WITH",
    "DROP",
    "SHOW",
    "STREAMS",
    "QUERIES",
    "STOP",
    "QUERY",
    "SET",
    "DESCRIBE",
    "EXPLAIN",
    "HOP",
    "TUMBLE",
    "RUNNING",
    "SESSION",
    "WATERMARK",
    "EMIT",
    "LATE",
    "INTERVAL",
    "unnest",
    "split",
    "string_to_array",
    "window_start",
    "window_end",
    "batch_interval",
    "connector",
    "incremental_windows",
    "checkpoint_dir",
    "idle_timeout",
    "max_ahead",
    "lateness_ms",
];

/// The REPL's rustyline helper.
pub(crate) struct ReplHelper {
    /// The stream, table and column names known after the last statement.
    pub names: Arc<RwLock<Vec<String>>>,
    /// Whether Enter keeps an incomplete statement open for more lines.
    /// Off for piped input, so that rustyline returns each line as read
    /// and the REPL can number lines (and skip one that is not UTF-8).
    pub multiline: bool,
}

/// Whether `input` is ready to run: a meta-command, or SQL whose last
/// token, ignoring whitespace and comments, is `;`. sqlparser's tokenizer
/// decides what is a string, a quoted name or a comment, as when the
/// statement is parsed (so `-- don't` is a comment, not an open quote).
pub(crate) fn is_complete(input: &str) -> bool {
    let trimmed = input.trim();
    if trimmed.is_empty() || super::meta::is_meta_command(trimmed) {
        return true;
    }
    match Tokenizer::new(&GenericDialect {}, input).tokenize() {
        Ok(tokens) => tokens
            .iter()
            .rev()
            .find(|token| !matches!(token, Token::Whitespace(_)))
            .is_some_and(|token| *token == Token::SemiColon),
        // The user is still typing a string, quoted name or comment. Any
        // other error is reported once the statement runs, so it must not
        // keep the statement open.
        Err(err) => !ends_inside_a_token(&err),
    }
}

/// When `input` ends inside a string, quoted name or comment: the error
/// that says so, located in `input` (`Unterminated string literal` at the
/// opening quote).
pub(crate) fn unclosed(input: &str) -> Option<BrookError> {
    match Tokenizer::new(&GenericDialect {}, input).tokenize() {
        Err(err) if ends_inside_a_token(&err) => Some(BrookError::Sql {
            message: err.message,
            location: Some(SqlLocation {
                line: err.location.line,
                column: err.location.column,
            }),
        }),
        _ => None,
    }
}

/// Whether the tokenizer failed because the input ended inside a string,
/// quoted name or comment, rather than at a bad character.
fn ends_inside_a_token(err: &TokenizerError) -> bool {
    err.message.contains("EOF") || err.message.starts_with("Unterminated")
}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if !self.multiline || is_complete(ctx.input()) {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\\' || c == '.'))
            .map_or(0, |i| i + 1);
        let prefix = &before[start..];
        if prefix.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let lower = prefix.to_lowercase();
        // Keywords in the case the user types them.
        let keyword_case = |k: &str| {
            if prefix.chars().any(char::is_uppercase) {
                k.to_uppercase()
            } else {
                k.to_lowercase()
            }
        };
        let names = self.names.read().clone();
        let mut candidates: Vec<String> = if prefix.starts_with('\\') || prefix.starts_with('.') {
            super::meta::completions(prefix)
                .map(str::to_string)
                .collect()
        } else {
            names
                .into_iter()
                .filter(|n| n.to_lowercase().starts_with(&lower))
                .chain(
                    KEYWORDS
                        .iter()
                        .filter(|k| k.to_lowercase().starts_with(&lower))
                        .map(|k| keyword_case(k)),
                )
                .collect()
        };
        candidates.sort();
        candidates.dedup();
        Ok((
            start,
            candidates
                .into_iter()
                .map(|c| Pair {
                    display: c.clone(),
                    replacement: c,
                })
                .collect(),
        ))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {}

impl Helper for ReplHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_run_at_the_semicolon() {
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT ';"));
        assert!(is_complete("SELECT 1;"));
        assert!(is_complete("SELECT 1\nFROM t;  "));
        assert!(is_complete("\\d"));
        assert!(is_complete(""));
    }

    #[test]
    fn regression_an_apostrophe_in_a_comment_does_not_keep_the_statement_open() {
        assert!(is_complete("SELECT 1; -- don't"));
        assert!(is_complete("SELECT 1 -- don't\n;"));
        assert!(is_complete("SELECT 1 /* it's */;"));
        assert!(!is_complete("SELECT 1 -- the end;"));
        assert!(!is_complete("SELECT 1 /* open;"));
        assert!(!is_complete("SELECT \"a;"));
        assert!(is_complete("SELECT 'it''s';"));
    }

    #[test]
    fn only_an_open_string_quoted_name_or_comment_is_unclosed() {
        assert!(unclosed("SELECT 1").is_none());
        assert!(unclosed("SELECT 1 -- the end").is_none());
        let located = |input: &str| {
            let err = unclosed(input).expect(input);
            (err.to_string(), err.location().map(|l| (l.line, l.column)))
        };
        assert_eq!(
            located("SELECT 1;\nSELECT 'abc;"),
            ("Unterminated string literal".to_string(), Some((2, 8)))
        );
        assert_eq!(
            located("SELECT \"a;"),
            (
                "Expected close delimiter '\"' before EOF.".to_string(),
                Some((1, 8))
            )
        );
        assert_eq!(
            located("SELECT 1 /* open;"),
            (
                "Unexpected EOF while in a multi-line comment".to_string(),
                Some((1, 18))
            )
        );
    }

    #[test]
    fn completion_offers_names_and_keywords() {
        let helper = ReplHelper {
            names: Arc::new(RwLock::new(vec!["sensors".into(), "select_me".into()])),
            multiline: true,
        };
        let history = rustyline::history::DefaultHistory::new();
        let ctx = Context::new(&history);
        let (start, found) = helper.complete("SELECT * FROM sen", 17, &ctx).unwrap();
        assert_eq!(start, 14);
        let found: Vec<_> = found.into_iter().map(|p| p.replacement).collect();
        assert_eq!(found, vec!["sensors"]);
        let (_, found) = helper.complete("sel", 3, &ctx).unwrap();
        let found: Vec<_> = found.into_iter().map(|p| p.replacement).collect();
        assert_eq!(found, vec!["select", "select_me"]);
        let (_, found) = helper.complete("\\ti", 3, &ctx).unwrap();
        assert_eq!(found[0].replacement, "\\timing");
        let (_, found) = helper.complete(".t", 2, &ctx).unwrap();
        let found: Vec<_> = found.into_iter().map(|p| p.replacement).collect();
        assert_eq!(found, vec![".tables", ".timer"]);
    }
}
