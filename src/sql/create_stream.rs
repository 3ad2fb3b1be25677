//! `CREATE STREAM name (columns, WATERMARK FOR ...) WITH (options)`: the
//! column list with its SQL types, the watermark declaration and the
//! options.

use std::time::Duration;

use datafusion::arrow::datatypes::Field;
use datafusion::sql::sqlparser::ast::{ColumnDef, ColumnOption, Expr, TableConstraint};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use super::interval::parse_delay;
use super::tokens::{
    at, at_span, brook_parser, expect_end, location_of, normalize_ident, object_name, option_pair,
    parser_error,
};
use super::types::arrow_type;
use crate::error::{BrookError, Result};

/// A parsed `CREATE STREAM`.
#[derive(Debug, Clone)]
pub struct CreateStream {
    /// The stream's name (unquoted names are lower-cased, as DataFusion does).
    pub name: String,
    /// `IF NOT EXISTS` was given.
    pub if_not_exists: bool,
    /// The declared columns; empty when no column list was given.
    pub columns: Vec<Field>,
    /// `PRIMARY KEY (a, b)` (or `a INT PRIMARY KEY`): the key of a
    /// changelog stream or table; empty when none is declared.
    pub primary_key: Vec<String>,
    /// `WITH (key = 'value', ...)`: keys lower-cased, values as written.
    pub options: Vec<(String, String)>,
    /// `WATERMARK FOR column AS column - INTERVAL '...'`: the event-time
    /// column and the watermark's delay.
    pub watermark: Option<(String, Duration)>,
}

pub(super) fn parse_create_stream(tokens: Vec<TokenWithSpan>) -> Result<CreateStream> {
    let (tokens, watermark) = split_watermark(tokens)?;
    let watermark = watermark.map(parse_watermark).transpose()?;
    let mut create = parse_create_with_options(tokens)?;
    create.watermark = watermark;
    Ok(create)
}

/// `CREATE <kind> [IF NOT EXISTS] name (columns) WITH (options)`, the
/// kind (`STREAM`, `TABLE`) checked by the caller.
pub(super) fn parse_create_with_options(tokens: Vec<TokenWithSpan>) -> Result<CreateStream> {
    let mut parser = brook_parser(tokens);
    let mut create = || -> Result<CreateStream, ParserError> {
        parser.expect_keyword(Keyword::CREATE)?;
        parser.next_token(); // STREAM, checked by the caller
        let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name_token = parser.peek_token();
        let name = parser.parse_object_name(false)?;
        let (column_defs, constraints) = parser.parse_columns()?;
        let options = parser.parse_options(Keyword::WITH)?;
        expect_end(&mut parser)?;
        Ok(CreateStream {
            name: object_name(&name).map_err(|m| at(&name_token, m))?,
            if_not_exists,
            columns: column_defs
                .iter()
                .map(|c| {
                    arrow_type(&c.data_type)
                        .map(|t| Field::new(normalize_ident(&c.name), t, true))
                        .map_err(|e| at_span(c.name.span.start, e.to_string()))
                })
                .collect::<Result<_, _>>()?,
            primary_key: primary_key(&column_defs, &constraints).map_err(|m| at(&name_token, m))?,
            options: options.iter().map(option_pair).collect::<Result<_, _>>()?,
            watermark: None,
        })
    };
    create().map_err(parser_error)
}

/// The primary key declared on a column (`id INT PRIMARY KEY`) or for the
/// table (`PRIMARY KEY (a, b) [NOT ENFORCED]`); at most one.
fn primary_key(
    columns: &[ColumnDef],
    constraints: &[TableConstraint],
) -> std::result::Result<Vec<String>, String> {
    let mut keys: Vec<Vec<String>> = Vec::new();
    for column in columns {
        if column
            .options
            .iter()
            .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
        {
            keys.push(vec![normalize_ident(&column.name)]);
        }
    }
    for constraint in constraints {
        match constraint {
            TableConstraint::PrimaryKey(key) => {
                let mut names = Vec::new();
                for column in &key.columns {
                    match &column.column.expr {
                        Expr::Identifier(ident) => names.push(normalize_ident(ident)),
                        other => {
                            return Err(format!(
                                "PRIMARY KEY names columns, not expressions ({other})"
                            ));
                        }
                    }
                }
                keys.push(names);
            }
            other => {
                return Err(format!(
                    "only PRIMARY KEY constraints are supported here, not {other}"
                ));
            }
        }
    }
    if keys.len() > 1 {
        return Err("more than one PRIMARY KEY is declared".into());
    }
    let key = keys.pop().unwrap_or_default();
    for name in &key {
        if !columns.iter().any(|c| normalize_ident(&c.name) == *name) {
            return Err(format!("PRIMARY KEY column '{name}' is not declared"));
        }
    }
    Ok(key)
}

/// Takes a `WATERMARK FOR ...` entry out of a `CREATE STREAM`'s column list:
/// the remaining tokens, and the entry's tokens.
pub(super) fn split_watermark(
    mut tokens: Vec<TokenWithSpan>,
) -> Result<(Vec<TokenWithSpan>, Option<Vec<TokenWithSpan>>)> {
    let mut depth = 0;
    let mut previous: Option<usize> = None;
    let mut start = None;
    for (i, token) in tokens.iter().enumerate() {
        match &token.token {
            Token::Whitespace(_) => continue,
            Token::Word(w)
                if depth == 1
                    && w.quote_style.is_none()
                    && w.value.eq_ignore_ascii_case("watermark")
                    && previous.is_some_and(|p| {
                        matches!(tokens[p].token, Token::LParen | Token::Comma)
                    }) =>
            {
                start = Some(i);
                break;
            }
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        previous = Some(i);
    }
    let Some(start) = start else {
        return Ok((tokens, None));
    };
    // The entry ends at the next comma or closing parenthesis of the list.
    let mut depth = 0;
    let mut end = tokens.len();
    for (i, token) in tokens.iter().enumerate().skip(start) {
        match token.token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => {
                end = i;
                break;
            }
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let entry: Vec<TokenWithSpan> = tokens[start..end].to_vec();
    let before = previous.unwrap_or(start);
    if matches!(tokens[before].token, Token::Comma) {
        tokens.drain(before..end);
    } else if end < tokens.len() && matches!(tokens[end].token, Token::Comma) {
        tokens.drain(start..=end);
    } else {
        tokens.drain(start..end);
    }
    Ok((tokens, Some(entry)))
}

/// `WATERMARK FOR ts AS ts - INTERVAL '5' SECOND` (or `AS ts`): the column
/// and the delay.
pub(super) fn parse_watermark(tokens: Vec<TokenWithSpan>) -> Result<(String, Duration)> {
    let first = tokens.first().cloned();
    let mut parser = brook_parser(tokens);
    let mut watermark = || -> Result<(String, Duration), ParserError> {
        parser.next_token(); // WATERMARK
        parser.expect_keyword(Keyword::FOR)?;
        let column = parser.parse_identifier()?;
        parser.expect_keyword(Keyword::AS)?;
        let expr_token = parser.peek_token();
        let expr = parser.parse_expr()?;
        expect_end(&mut parser)?;
        let usage = || {
            at(
                &expr_token,
                format!(
                    "the watermark is the event-time column or the column minus an interval: WATERMARK FOR {0} AS {0} - INTERVAL '5' SECOND",
                    column.value
                ),
            )
        };
        let same_column = |expr: &Expr| matches!(expr, Expr::Identifier(ident) if normalize_ident(ident) == normalize_ident(&column));
        let delay = match &expr {
            e if same_column(e) => Duration::ZERO,
            Expr::BinaryOp {
                left,
                op: datafusion::sql::sqlparser::ast::BinaryOperator::Minus,
                right,
            } if same_column(left) => {
                let Expr::Interval(interval) = right.as_ref() else {
                    return Err(usage());
                };
                let text = interval.to_string();
                let text = text.trim_start_matches("INTERVAL").replace('\'', " ");
                parse_delay(text.trim()).map_err(|err| at(&expr_token, err.to_string()))?
            }
            _ => return Err(usage()),
        };
        Ok((normalize_ident(&column), delay))
    };
    watermark().map_err(|err| match (parser_error(err), &first) {
        (
            BrookError::Sql {
                message,
                location: None,
            },
            Some(first),
        ) => BrookError::Sql {
            message,
            location: Some(location_of(first)),
        },
        (other, _) => other,
    })
}
