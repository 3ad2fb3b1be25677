//! Statement splitting and parsing: brook's statements and DataFusion's.

use std::time::Duration;

use datafusion::error::DataFusionError;
use datafusion::sql::parser::{DFParserBuilder, Statement as DataFusionStatement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::interval::parse_duration;
use crate::error::{BrookError, Result, SqlLocation};

pub use super::create_stream::CreateStream;
use super::create_stream::parse_create_stream;
use super::tokens::{
    at, brook_parser, expect_end, location_of, object_name, option_pair, parse_drop,
    parse_drop_words, parse_set_value, parser_error, split_location,
};

/// One statement of a script, parsed, with the text it came from.
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    /// What the statement asks for.
    pub statement: BrookStatement,
    /// The statement's own text (without the terminating `;`).
    pub sql: String,
    /// Where the statement starts in the script.
    pub location: SqlLocation,
    /// `EMIT ON ...` and `LATE DATA TO ...` after a query.
    pub clauses: StreamClauses,
}

/// When an event-time window emits its results (`EMIT ON ...` after the
/// query).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmitMode {
    /// `EMIT ON WINDOW CLOSE` (the default): each window's final result,
    /// once, in the batch after which the watermark reaches its end.
    #[default]
    OnWindowClose,
    /// `EMIT ON UPDATE`: every batch, the current result of each window the
    /// batch changed.
    OnUpdate,
}

/// The clauses brook reads after a continuous query, before DataFusion
/// parses the rest: `EMIT ON WINDOW CLOSE | UPDATE` and
/// `LATE DATA TO stream`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamClauses {
    /// `EMIT ON ...`, when given.
    pub emit: Option<EmitMode>,
    /// `LATE DATA TO name`: the stream late rows go to.
    pub late_data_to: Option<String>,
    /// Where the clauses start, for errors.
    pub location: Option<SqlLocation>,
}

impl StreamClauses {
    /// Whether no clause was given.
    pub fn is_empty(&self) -> bool {
        self.emit.is_none() && self.late_data_to.is_none()
    }
}

/// The statements brook understands itself; everything else is DataFusion's.
#[derive(Debug, Clone)]
pub enum BrookStatement {
    /// `CREATE STREAM name (columns) WITH (options)`.
    CreateStream(CreateStream),
    /// `DROP STREAM [IF EXISTS] name`.
    DropStream {
        /// The stream to drop.
        name: String,
        /// Whether a missing stream is fine.
        if_exists: bool,
    },
    /// `SHOW STREAMS`.
    ShowStreams,
    /// `SET batch_interval = '3 seconds'`.
    SetBatchInterval(Duration),
    /// `SET incremental_windows = true | false`: whether window and running
    /// aggregates use per-batch partial aggregates (the default) or re-run
    /// the query over every retained batch.
    SetIncrementalWindows(bool),
    /// `SET on_query_error = 'continue' | 'stop'`: whether a query goes on
    /// after a batch it cannot execute (the default) or stops.
    SetStopOnQueryError(bool),
    /// `SET checkpoint_dir = '/path'` (or `''` / `'none'` for none): where
    /// continuous queries started from now on keep their checkpoints.
    SetCheckpointDir(Option<String>),
    /// `SET checkpoint_interval = N`: queries started from now on write a
    /// checkpoint every N batches (default 1).
    SetCheckpointInterval(u64),
    /// `SHOW QUERIES`: the running continuous queries.
    ShowQueries,
    /// `STOP QUERY n`: stops running query `n` after its batch in progress.
    StopQuery(u64),
    /// `CREATE TABLE name (columns) WITH (connector = 'postgres', ...)`: a
    /// table looked up by key as batches need it.
    CreateLookupTable(CreateStream),
    /// `CREATE SINK name WITH (...) AS SELECT ...`.
    CreateSink(CreateSink),
    /// `CREATE MATERIALIZED VIEW name AS SELECT ...`: a continuous query
    /// whose latest result is the table `name` (no options).
    CreateMaterializedView(CreateSink),
    /// `DROP MATERIALIZED VIEW [IF EXISTS] name`.
    DropMaterializedView {
        /// The view to drop.
        name: String,
        /// Whether a missing view is fine.
        if_exists: bool,
    },
    /// `DROP SINK [IF EXISTS] name`: stops the sink's query.
    DropSink {
        /// The sink to drop.
        name: String,
        /// Whether a missing sink is fine.
        if_exists: bool,
    },
    /// Any other statement, parsed by DataFusion (queries, `INSERT`,
    /// `CREATE EXTERNAL TABLE`, `SET datafusion.*`, ...).
    DataFusion(Box<DataFusionStatement>),
}

/// A parsed `CREATE SINK`.
#[derive(Debug, Clone)]
pub struct CreateSink {
    /// The sink's name.
    pub name: String,
    /// `IF NOT EXISTS` was given.
    pub if_not_exists: bool,
    /// `WITH (key = 'value', ...)`: keys lower-cased, values as written.
    pub options: Vec<(String, String)>,
    /// The continuous query whose results the sink writes.
    pub query: Box<DataFusionStatement>,
    /// `EMIT ON ...` and `LATE DATA TO ...` after the query.
    pub clauses: StreamClauses,
}

/// Splits `sql` into statements at `;` and parses each. Fails on the first
/// statement that does not parse, naming its line and column.
pub fn parse_sql(sql: &str) -> Result<Vec<ParsedStatement>> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|err| BrookError::Sql {
            message: err.message,
            location: Some(SqlLocation {
                line: err.location.line,
                column: err.location.column,
            }),
        })?;
    let text = ScriptText::new(sql);
    let mut parsed = Vec::new();
    for statement_tokens in tokens.split(|t| t.token == Token::SemiColon) {
        let meaningful: Vec<&TokenWithSpan> = statement_tokens
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        let (Some(first), Some(last)) = (meaningful.first(), meaningful.last()) else {
            continue;
        };
        let location = SqlLocation {
            line: first.span.start.line,
            column: first.span.start.column,
        };
        // Errors at the end of input ("found: EOF") carry no position of
        // their own: point just past the statement's last token.
        let end = SqlLocation {
            line: last.span.end.line,
            column: last.span.end.column,
        };
        let (statement, clauses) = parse_statement(statement_tokens.to_vec(), &meaningful)
            .map_err(|err| match err {
                BrookError::Sql {
                    message,
                    location: None,
                } => BrookError::Sql {
                    message,
                    location: Some(end),
                },
                other => other,
            })?;
        parsed.push(ParsedStatement {
            statement,
            sql: text.slice(first.span.start, last.span.end).to_string(),
            location,
            clauses,
        });
    }
    Ok(parsed)
}

fn parse_statement(
    tokens: Vec<TokenWithSpan>,
    meaningful: &[&TokenWithSpan],
) -> Result<(BrookStatement, StreamClauses)> {
    let word = |i: usize| match meaningful.get(i).map(|t| &t.token) {
        Some(Token::Word(w)) => w.value.to_ascii_lowercase(),
        _ => String::new(),
    };
    let statement = match (word(0).as_str(), word(1).as_str()) {
        ("create", "stream") => parse_create_stream(tokens).map(BrookStatement::CreateStream),
        ("drop", "stream") => parse_drop(tokens)
            .map(|(name, if_exists)| BrookStatement::DropStream { name, if_exists }),
        ("show", "streams") if meaningful.len() == 2 => Ok(BrookStatement::ShowStreams),
        ("show", "queries") if meaningful.len() == 2 => Ok(BrookStatement::ShowQueries),
        ("stop", "query") => parse_stop_query(tokens),
        ("create", "sink") => parse_create_sink(tokens).map(BrookStatement::CreateSink),
        ("create", "table") if has_connector_option(meaningful) => {
            parse_create_stream(tokens).map(BrookStatement::CreateLookupTable)
        }
        ("drop", "sink") => {
            parse_drop(tokens).map(|(name, if_exists)| BrookStatement::DropSink { name, if_exists })
        }
        ("create", "materialized") => {
            parse_create_view(tokens).map(BrookStatement::CreateMaterializedView)
        }
        ("drop", "materialized") => {
            parse_drop_words(tokens, &[Keyword::MATERIALIZED, Keyword::VIEW])
                .map(|(name, if_exists)| BrookStatement::DropMaterializedView { name, if_exists })
        }
        ("set", "batch_interval") => parse_set_batch_interval(tokens),
        ("set", "incremental_windows") => parse_set_incremental_windows(tokens),
        ("set", "on_query_error") => parse_set_on_query_error(tokens),
        ("set", "checkpoint_interval") => {
            let (token, value) = parse_set_value(tokens, "a number of batches such as 10")?;
            match value.parse::<u64>() {
                Ok(n) if n > 0 => Ok(BrookStatement::SetCheckpointInterval(n)),
                _ => Err(BrookError::Sql {
                    message: format!(
                        "checkpoint_interval is a number of batches (1 or more), not '{value}'"
                    ),
                    location: Some(location_of(&token)),
                }),
            }
        }
        ("set", "checkpoint_dir") => {
            let (_, value) = parse_set_value(tokens, "a directory such as '/var/lib/brook'")?;
            Ok(BrookStatement::SetCheckpointDir(
                (!value.is_empty() && !value.eq_ignore_ascii_case("none")).then_some(value),
            ))
        }
        _ => {
            let (tokens, clauses) = split_stream_clauses(tokens)?;
            let statement = parse_datafusion(strip_system_time(tokens))?;
            return Ok((BrookStatement::DataFusion(Box::new(statement)), clauses));
        }
    };
    statement.map(|statement| (statement, StreamClauses::default()))
}

/// Whether a `CREATE TABLE` gives `connector` in a `WITH (...)` after its
/// column list (a lookup table), rather than being DataFusion's.
fn has_connector_option(meaningful: &[&TokenWithSpan]) -> bool {
    let mut depth = 0;
    let mut after_with = false;
    for token in meaningful {
        match &token.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(w) if depth == 0 && w.value.eq_ignore_ascii_case("with") => {
                after_with = true;
            }
            Token::Word(w) if depth == 0 && w.value.eq_ignore_ascii_case("as") => return false,
            Token::Word(w)
                if depth == 1 && after_with && w.value.eq_ignore_ascii_case("connector") =>
            {
                return true;
            }
            _ => {}
        }
    }
    false
}

/// Drops Flink's `FOR SYSTEM_TIME AS OF expr` after a table: a lookup
/// table is always read as of the batch that looks it up.
fn strip_system_time(mut tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let is_word = |token: &TokenWithSpan, word: &str| matches!(&token.token, Token::Word(w) if w.value.eq_ignore_ascii_case(word));
    let mut index = 0;
    while index < tokens.len() {
        let meaningful: Vec<usize> = (index..tokens.len())
            .filter(|i| !matches!(tokens[*i].token, Token::Whitespace(_)))
            .take(4)
            .collect();
        let clause = ["for", "system_time", "as", "of"];
        let starts_clause = meaningful.len() == 4
            && meaningful[0] == index
            && meaningful
                .iter()
                .zip(clause)
                .all(|(i, word)| is_word(&tokens[*i], word));
        if !starts_clause {
            index += 1;
            continue;
        }
        // The expression: a dotted name, called or not (`r.proc_time`,
        // `PROCTIME()`).
        let mut end = meaningful[3] + 1;
        let mut expect_name = true;
        while end < tokens.len() {
            match &tokens[end].token {
                Token::Whitespace(_) => end += 1,
                Token::Word(_) if expect_name => {
                    expect_name = false;
                    end += 1;
                }
                Token::Period if !expect_name => {
                    expect_name = true;
                    end += 1;
                }
                Token::LParen if !expect_name => {
                    let mut depth = 0;
                    while end < tokens.len() {
                        match tokens[end].token {
                            Token::LParen => depth += 1,
                            Token::RParen => depth -= 1,
                            _ => {}
                        }
                        end += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    break;
                }
                _ => break,
            }
        }
        tokens.drain(index..end);
    }
    tokens
}

/// Takes `EMIT ON WINDOW CLOSE | UPDATE` and `LATE DATA TO name` off the
/// end of a statement (outside any parentheses), in either order.
fn split_stream_clauses(
    mut tokens: Vec<TokenWithSpan>,
) -> Result<(Vec<TokenWithSpan>, StreamClauses)> {
    let mut clauses = StreamClauses::default();
    loop {
        let words = MeaningfulTokens::new(&tokens);
        let clause_start = match take_emit(&words, &mut clauses)? {
            Some(start) => Some(start),
            None => take_late_data_to(&words, &mut clauses)?,
        };
        let Some(start) = clause_start else {
            break;
        };
        tokens.truncate(start);
    }
    Ok((tokens, clauses))
}

/// The tokens of a statement that are not whitespace, counted `k` from
/// the first.
struct MeaningfulTokens<'a> {
    tokens: &'a [TokenWithSpan],
    /// The index in `tokens` of each one.
    indexes: Vec<usize>,
}

impl<'a> MeaningfulTokens<'a> {
    /// The tokens of `tokens` that are not whitespace.
    fn new(tokens: &'a [TokenWithSpan]) -> Self {
        let indexes = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
            .map(|(i, _)| i)
            .collect();
        MeaningfulTokens { tokens, indexes }
    }

    /// How many there are.
    fn len(&self) -> usize {
        self.indexes.len()
    }

    /// The `k`th token, as its index in the statement's tokens.
    fn index(&self, k: usize) -> usize {
        self.indexes[k]
    }

    /// The `k`th token.
    fn token(&self, k: usize) -> &'a Token {
        &self.tokens[self.indexes[k]].token
    }

    /// The `k`th token in lowercase if it is a word, else "".
    fn word(&self, k: usize) -> String {
        match self.indexes.get(k).map(|&i| &self.tokens[i].token) {
            Some(Token::Word(w)) => w.value.to_ascii_lowercase(),
            _ => String::new(),
        }
    }

    /// Whether the `k`th token is outside any parentheses.
    fn at_depth_zero(&self, k: usize) -> bool {
        let mut depth = 0i32;
        for &i in &self.indexes[..k] {
            match self.tokens[i].token {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                _ => {}
            }
        }
        depth == 0
    }

    /// Where the `k`th token starts, for errors.
    fn location(&self, k: usize) -> SqlLocation {
        location_of(&self.tokens[self.indexes[k]])
    }
}

/// Takes `... EMIT ON WINDOW CLOSE` or `... EMIT ON UPDATE` off the end of
/// `words` into `clauses`; the index of the token the clause starts at.
fn take_emit(words: &MeaningfulTokens, clauses: &mut StreamClauses) -> Result<Option<usize>> {
    let n = words.len();
    let emit = if n >= 4
        && words.word(n - 4) == "emit"
        && words.word(n - 3) == "on"
        && words.word(n - 2) == "window"
        && words.word(n - 1) == "close"
    {
        Some((n - 4, EmitMode::OnWindowClose))
    } else if n >= 3
        && words.word(n - 3) == "emit"
        && words.word(n - 2) == "on"
        && words.word(n - 1) == "update"
    {
        Some((n - 3, EmitMode::OnUpdate))
    } else {
        None
    };
    let Some((k, mode)) = emit else {
        return Ok(None);
    };
    if !words.at_depth_zero(k) {
        return Ok(None);
    }
    if clauses.emit.is_some() {
        return Err(BrookError::Sql {
            message: "EMIT is given twice".into(),
            location: Some(words.location(k)),
        });
    }
    clauses.emit = Some(mode);
    clauses.location = Some(words.location(k));
    Ok(Some(words.index(k)))
}

/// Takes `... LATE DATA TO name` off the end of `words` into `clauses`; the
/// index of the token the clause starts at.
fn take_late_data_to(
    words: &MeaningfulTokens,
    clauses: &mut StreamClauses,
) -> Result<Option<usize>> {
    let n = words.len();
    if !(n >= 4
        && words.word(n - 4) == "late"
        && words.word(n - 3) == "data"
        && words.word(n - 2) == "to"
        && words.at_depth_zero(n - 4))
    {
        return Ok(None);
    }
    let Token::Word(name) = words.token(n - 1) else {
        return Ok(None);
    };
    if clauses.late_data_to.is_some() {
        return Err(BrookError::Sql {
            message: "LATE DATA TO is given twice".into(),
            location: Some(words.location(n - 4)),
        });
    }
    clauses.late_data_to = Some(if name.quote_style.is_some() {
        name.value.clone()
    } else {
        name.value.to_ascii_lowercase()
    });
    clauses.location = Some(words.location(n - 4));
    Ok(Some(words.index(n - 4)))
}

/// `CREATE SINK`'s head: name, `IF NOT EXISTS`, options, and the index of
/// the query's first token.
type SinkHead = (String, bool, Vec<(String, String)>, usize);

fn parse_create_sink(tokens: Vec<TokenWithSpan>) -> Result<CreateSink> {
    // Joined here, so that the parser's index is one into these tokens.
    let tokens = super::tokens::join_dotted_option_keys(tokens);
    let mut parser = brook_parser(tokens.clone());
    let mut create = || -> Result<SinkHead, ParserError> {
        parser.expect_keyword(Keyword::CREATE)?;
        parser.next_token(); // SINK, checked by the caller
        let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name_token = parser.peek_token();
        let name = parser.parse_object_name(false)?;
        let name = object_name(&name).map_err(|m| at(&name_token, m))?;
        let options = parser.parse_options(Keyword::WITH)?;
        if options.is_empty() {
            let next = parser.peek_token();
            return parser.expected(
                "WITH (connector = 'file', path = '...', format = 'csv')",
                next,
            );
        }
        parser.expect_keyword(Keyword::AS)?;
        let options = options.iter().map(option_pair).collect::<Result<_, _>>()?;
        Ok((name, if_not_exists, options, parser.index()))
    };
    let (name, if_not_exists, options, query_start) = create().map_err(parser_error)?;
    let query_tokens: Vec<TokenWithSpan> = tokens.into_iter().skip(query_start).collect();
    let (query_tokens, clauses) = split_stream_clauses(query_tokens)?;
    let query = parse_datafusion(query_tokens)?;
    Ok(CreateSink {
        name,
        if_not_exists,
        options,
        query: Box::new(query),
        clauses,
    })
}

/// `CREATE MATERIALIZED VIEW [IF NOT EXISTS] name AS query`.
fn parse_create_view(tokens: Vec<TokenWithSpan>) -> Result<CreateSink> {
    let mut parser = brook_parser(tokens.clone());
    let mut create = || -> Result<(String, bool, usize), ParserError> {
        parser.expect_keyword(Keyword::CREATE)?;
        parser.expect_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW])?;
        let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name_token = parser.peek_token();
        let name = parser.parse_object_name(false)?;
        let name = object_name(&name).map_err(|m| at(&name_token, m))?;
        parser.expect_keyword(Keyword::AS)?;
        Ok((name, if_not_exists, parser.index()))
    };
    let (name, if_not_exists, query_start) = create().map_err(parser_error)?;
    let query_tokens: Vec<TokenWithSpan> = tokens.into_iter().skip(query_start).collect();
    let (query_tokens, clauses) = split_stream_clauses(query_tokens)?;
    let query = parse_datafusion(query_tokens)?;
    Ok(CreateSink {
        name,
        if_not_exists,
        options: Vec::new(),
        query: Box::new(query),
        clauses,
    })
}

fn parse_stop_query(tokens: Vec<TokenWithSpan>) -> Result<BrookStatement> {
    let mut parser = brook_parser(tokens);
    let mut stop = || -> Result<BrookStatement, ParserError> {
        parser.next_token(); // STOP
        parser.next_token(); // QUERY
        let id_token = parser.next_token();
        let id = match &id_token.token {
            Token::Number(n, _) => n.parse::<u64>().ok(),
            _ => None,
        };
        let Some(id) = id else {
            return parser.expected("a query number (SHOW QUERIES lists them)", id_token);
        };
        expect_end(&mut parser)?;
        Ok(BrookStatement::StopQuery(id))
    };
    stop().map_err(parser_error)
}

fn parse_set_batch_interval(tokens: Vec<TokenWithSpan>) -> Result<BrookStatement> {
    let (value_token, value) = parse_set_value(tokens, "a duration such as '3 seconds'")?;
    let interval = parse_duration(&value).map_err(|e| BrookError::Sql {
        message: e.to_string(),
        location: Some(location_of(&value_token)),
    })?;
    Ok(BrookStatement::SetBatchInterval(interval))
}

fn parse_set_on_query_error(tokens: Vec<TokenWithSpan>) -> Result<BrookStatement> {
    let (value_token, value) = parse_set_value(tokens, "'continue' or 'stop'")?;
    match value.to_ascii_lowercase().as_str() {
        "continue" => Ok(BrookStatement::SetStopOnQueryError(false)),
        "stop" => Ok(BrookStatement::SetStopOnQueryError(true)),
        _ => Err(BrookError::Sql {
            message: format!("on_query_error is 'continue' or 'stop', not '{value}'"),
            location: Some(location_of(&value_token)),
        }),
    }
}

fn parse_set_incremental_windows(tokens: Vec<TokenWithSpan>) -> Result<BrookStatement> {
    let (value_token, value) = parse_set_value(tokens, "true or false")?;
    match crate::options::parse_bool(&value) {
        Some(incremental) => Ok(BrookStatement::SetIncrementalWindows(incremental)),
        None => Err(BrookError::Sql {
            message: format!("incremental_windows is true or false, not '{value}'"),
            location: Some(location_of(&value_token)),
        }),
    }
}

fn parse_datafusion(tokens: Vec<TokenWithSpan>) -> Result<DataFusionStatement> {
    let mut parser = DFParserBuilder::new(tokens)
        .build()
        .map_err(|e| datafusion_sql_error(e, None))?;
    let mut statements = parser
        .parse_statements()
        .map_err(|e| datafusion_sql_error(e, None))?;
    match (statements.pop_front(), statements.is_empty()) {
        (Some(statement), true) => Ok(statement),
        _ => Err(BrookError::internal_split()),
    }
}

impl BrookError {
    fn internal_split() -> Self {
        BrookError::Internal("statement splitting left more than one statement".into())
    }
}

/// Turns a DataFusion parse or planning error into a [`BrookError::Sql`],
/// using the position DataFusion reports (its diagnostic span, or the
/// parser's `at Line: .., Column: ..`), else `fallback`.
pub(crate) fn datafusion_sql_error(
    err: DataFusionError,
    fallback: Option<SqlLocation>,
) -> BrookError {
    let span_location = err.diagnostic().and_then(|d| d.span).and_then(|span| {
        (span.start.line > 0).then_some(SqlLocation {
            line: span.start.line,
            column: span.start.column,
        })
    });
    let message = match err.find_root() {
        DataFusionError::SQL(parser_err, _) => match parser_err.as_ref() {
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => m.clone(),
            ParserError::RecursionLimitExceeded => "statement is nested too deeply".to_string(),
        },
        root => root.strip_backtrace(),
    };
    // DataFusion quotes a statement it does not support whole, options
    // and all.
    match split_location(crate::redact::redact_secrets(&message)) {
        BrookError::Sql { message, location } => BrookError::Sql {
            message,
            location: location.or(span_location).or(fallback),
        },
        other => other,
    }
}

/// Line starts of a script, to cut statements' text out of it by position.
struct ScriptText<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> ScriptText<'a> {
    fn new(text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, line_starts }
    }

    fn offset(&self, location: datafusion::sql::sqlparser::tokenizer::Location) -> usize {
        let Some(&line_start) = usize::try_from(location.line)
            .ok()
            .and_then(|line| self.line_starts.get(line.saturating_sub(1)))
        else {
            return self.text.len();
        };
        let column = usize::try_from(location.column.saturating_sub(1)).unwrap_or(usize::MAX);
        self.text[line_start..]
            .char_indices()
            .nth(column)
            .map_or(self.text.len(), |(i, _)| line_start + i)
    }

    fn slice(
        &self,
        start: datafusion::sql::sqlparser::tokenizer::Location,
        end: datafusion::sql::sqlparser::tokenizer::Location,
    ) -> &'a str {
        let (from, to) = (self.offset(start), self.offset(end));
        self.text.get(from..to.max(from)).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};

    #[test]
    fn splits_brook_and_datafusion_statements_keeping_their_text() {
        let script = "SET batch_interval = '3 seconds';\n\
                      CREATE STREAM lines (line TEXT) WITH (connector = 'queue', one_at_a_time = 'true');\n\
                      INSERT INTO lines VALUES ('a b');\n\
                      -- a comment\n\
                      SELECT line FROM lines;\n";
        let parsed = parse_sql(script).unwrap();
        assert_eq!(parsed.len(), 4);
        assert!(
            matches!(parsed[0].statement, BrookStatement::SetBatchInterval(d) if d == Duration::from_secs(3))
        );
        let BrookStatement::CreateStream(create) = &parsed[1].statement else {
            panic!("expected CREATE STREAM, got {:?}", parsed[1].statement)
        };
        assert_eq!(create.name, "lines");
        assert_eq!(
            create.columns,
            vec![Field::new("line", DataType::Utf8View, true)]
        );
        assert_eq!(
            create.options,
            vec![
                ("connector".into(), "queue".into()),
                ("one_at_a_time".into(), "true".into())
            ]
        );
        assert!(matches!(parsed[2].statement, BrookStatement::DataFusion(_)));
        assert_eq!(parsed[3].sql, "SELECT line FROM lines");
        assert_eq!(parsed[3].location, SqlLocation { line: 5, column: 1 });
    }

    #[test]
    fn syntax_error_names_line_and_column_in_the_script() {
        let err = parse_sql("SELECT 1;\nSELECT * FORM t;").unwrap_err();
        let location = err.location().expect("location");
        assert_eq!(location.line, 2);
        assert_eq!(location.column, 10);
        assert!(err.to_string().contains("FORM"), "{err}");
    }

    #[test]
    fn create_stream_errors_point_at_the_bad_part() {
        let err = parse_sql("CREATE STREAM s (a INTERVAL) WITH (connector = 'queue')").unwrap_err();
        assert!(err.to_string().contains("unsupported column type"), "{err}");
        assert_eq!(
            err.location(),
            Some(SqlLocation {
                line: 1,
                column: 18
            })
        );

        let err =
            parse_sql("CREATE STREAM s (a INT) WITH (connector = 'queue') extra").unwrap_err();
        assert!(err.to_string().contains("end of statement"), "{err}");
    }

    #[test]
    fn drop_show_and_quoted_names() {
        let parsed = parse_sql("DROP STREAM IF EXISTS \"Mixed\"; SHOW STREAMS").unwrap();
        assert!(
            matches!(&parsed[0].statement, BrookStatement::DropStream { name, if_exists: true } if name == "Mixed")
        );
        assert!(matches!(parsed[1].statement, BrookStatement::ShowStreams));
    }

    #[test]
    fn bad_batch_interval_is_a_located_error() {
        let err = parse_sql("SET batch_interval = 'soon'").unwrap_err();
        assert!(err.to_string().contains("invalid duration 'soon'"), "{err}");
        assert_eq!(
            err.location(),
            Some(SqlLocation {
                line: 1,
                column: 22
            })
        );
    }
}
