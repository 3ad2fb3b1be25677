//! The small pieces brook's statement parsers share: a sqlparser parser
//! over a statement's tokens, option pairs and names, and errors located at
//! a token (line and column in the whole script).

use datafusion::sql::sqlparser::ast::{Expr, Ident, ObjectName, SqlOption, Value};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{BrookError, Result, SqlLocation};

pub(super) fn brook_parser(tokens: Vec<TokenWithSpan>) -> Parser<'static> {
    static DIALECT: GenericDialect = GenericDialect {};
    Parser::new(&DIALECT).with_tokens_with_locations(join_dotted_option_keys(tokens))
}

/// Inside `WITH (...)`, a dotted key before `=` (`s3.endpoint = '...'`,
/// as Flink and RisingWave write them) becomes one quoted name, as if
/// written `"s3.endpoint"`: sqlparser's option list takes one identifier.
pub(super) fn join_dotted_option_keys(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let is_word = |t: &Token| matches!(t, Token::Word(w) if w.quote_style.is_none());
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i].token;
        if depth == 0 {
            if *token == Token::LParen
                && out
                    .iter()
                    .rev()
                    .find(|t| !matches!(t.token, Token::Whitespace(_)))
                    .is_some_and(
                        |t| matches!(&t.token, Token::Word(w) if w.keyword == Keyword::WITH),
                    )
            {
                depth = 1;
            }
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        match token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        // A run `word . word [. word ...]` followed by `=`.
        let mut end = i;
        let mut parts = Vec::new();
        while end < tokens.len() && is_word(&tokens[end].token) {
            if let Token::Word(w) = &tokens[end].token {
                parts.push(w.value.clone());
            }
            if tokens.get(end + 1).map(|t| &t.token) == Some(&Token::Period) {
                end += 2;
            } else {
                end += 1;
                break;
            }
        }
        let before_eq = tokens[end..]
            .iter()
            .find(|t| !matches!(t.token, Token::Whitespace(_)))
            .is_some_and(|t| t.token == Token::Eq);
        if depth == 1 && parts.len() > 1 && before_eq {
            let mut joined = tokens[i].clone();
            joined.token = Token::make_word(&parts.join("."), Some('"'));
            joined.span = datafusion::sql::sqlparser::tokenizer::Span::new(
                tokens[i].span.start,
                tokens[end - 1].span.end,
            );
            out.push(joined);
            i = end;
        } else {
            out.push(tokens[i].clone());
            i += 1;
        }
    }
    out
}

pub(super) fn expect_end(parser: &mut Parser) -> Result<(), ParserError> {
    let next = parser.peek_token();
    if next.token == Token::EOF {
        Ok(())
    } else {
        parser.expected("end of statement", next)
    }
}

pub(super) fn option_pair(option: &SqlOption) -> Result<(String, String), ParserError> {
    match option {
        SqlOption::KeyValue { key, value } => {
            let text = expr_text(value).ok_or_else(|| {
                at_span(
                    key.span.start,
                    format!("option '{}' needs a value such as '9000'", key.value),
                )
            })?;
            Ok((key.value.to_ascii_lowercase(), text))
        }
        other => Err(ParserError::ParserError(format!(
            "expected an option of the form key = 'value', found {other}"
        ))),
    }
}

/// The text of an option value: a string, a number, a boolean or a bare word.
pub(super) fn expr_text(value: &Expr) -> Option<String> {
    match value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.to_string()),
            Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        },
        Expr::Identifier(ident) => Some(ident.value.clone()),
        _ => None,
    }
}

pub(crate) fn object_name(name: &ObjectName) -> Result<String, String> {
    match name.0.as_slice() {
        [part] => part
            .as_ident()
            .map(normalize_ident)
            .ok_or_else(|| format!("expected a stream name, found {name}")),
        _ => Err(format!("stream names have one part; found {name}")),
    }
}

/// Unquoted identifiers are lower-cased, as DataFusion does for table names.
pub(crate) fn normalize_ident(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

pub(super) fn location_of(token: &TokenWithSpan) -> SqlLocation {
    SqlLocation {
        line: token.span.start.line,
        column: token.span.start.column,
    }
}

pub(super) fn at(token: &TokenWithSpan, message: String) -> ParserError {
    at_span(token.span.start, message)
}

pub(super) fn at_span(
    location: datafusion::sql::sqlparser::tokenizer::Location,
    message: String,
) -> ParserError {
    ParserError::ParserError(format!(
        "{message} at Line: {}, Column: {}",
        location.line, location.column
    ))
}

pub(super) fn parser_error(err: ParserError) -> BrookError {
    let message = match err {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => "statement is nested too deeply".to_string(),
    };
    split_location(message)
}

/// sqlparser puts the position at the end of its messages: `... at Line: 3, Column: 7`.
pub(super) fn split_location(message: String) -> BrookError {
    if let Some(at) = message.rfind(" at Line: ") {
        let position = &message[at + " at Line: ".len()..];
        let mut numbers = position
            .split(", Column: ")
            .map(|n| n.trim().parse::<u64>());
        if let (Some(Ok(line)), Some(Ok(column))) = (numbers.next(), numbers.next()) {
            return BrookError::Sql {
                message: message[..at].to_string(),
                location: Some(SqlLocation { line, column }),
            };
        }
    }
    BrookError::Sql {
        message,
        location: None,
    }
}

/// `DROP <STREAM | SINK> [IF EXISTS] name`: the name and `IF EXISTS`.
pub(super) fn parse_drop(tokens: Vec<TokenWithSpan>) -> Result<(String, bool)> {
    parse_drop_words(tokens, &[])
}

/// `DROP <kind> [IF EXISTS] name`, the kind's words being `kind` (one
/// word, checked by the caller, when empty).
pub(super) fn parse_drop_words(
    tokens: Vec<TokenWithSpan>,
    kind: &[Keyword],
) -> Result<(String, bool)> {
    let mut parser = brook_parser(tokens);
    let mut drop = || -> Result<(String, bool), ParserError> {
        parser.expect_keyword(Keyword::DROP)?;
        if kind.is_empty() {
            parser.next_token(); // STREAM or SINK, checked by the caller
        } else {
            parser.expect_keywords(kind)?;
        }
        let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name_token = parser.peek_token();
        let name = parser.parse_object_name(false)?;
        expect_end(&mut parser)?;
        Ok((
            object_name(&name).map_err(|m| at(&name_token, m))?,
            if_exists,
        ))
    };
    drop().map_err(parser_error)
}

/// `SET name = value` or `SET name TO value`: the value's text and token.
pub(super) fn parse_set_value(
    tokens: Vec<TokenWithSpan>,
    expected: &str,
) -> Result<(TokenWithSpan, String)> {
    let mut parser = brook_parser(tokens);
    let mut set = || -> Result<(TokenWithSpan, String), ParserError> {
        parser.expect_keyword(Keyword::SET)?;
        parser.next_token(); // the setting's name, checked by the caller
        if !parser.consume_token(&Token::Eq) {
            parser.expect_keyword(Keyword::TO)?;
        }
        let value_token = parser.peek_token();
        let value = parser.parse_expr()?;
        expect_end(&mut parser)?;
        let value =
            expr_text(&value).ok_or_else(|| at(&value_token, format!("expected {expected}")))?;
        Ok((value_token, value))
    };
    set().map_err(parser_error)
}
