//! One statement at a time for `brook run`, `-c` and the REPL: the setting
//! only the command line knows (`SET statement_timeout`), a bound on how
//! deeply expressions nest, and cancelling a statement on its timeout or
//! on the user's request.

use std::future::Future;
use std::ops::ControlFlow;
use std::time::Duration;

use datafusion::sql::parser::{CopyToSource, Statement as DataFusionStatement};
use datafusion::sql::sqlparser::ast::{Expr, Set, Statement, Value, Visit, Visitor};

use crate::catalog::windows::format_duration;
use crate::context::{SqlOutput, StreamContext};
use crate::error::{BrookError, Result};
use crate::sql::{BrookStatement, ParsedStatement, parse_timeout};

/// How deeply expressions may nest: `a OR b OR c ...` nests one level per
/// operator. DataFusion plans expressions recursively (a debug build uses
/// about 32 KiB of stack per level) and coerces types in time quadratic in
/// the depth, so a 20,000-term chain would overflow any stack or plan for
/// minutes; deeper input is refused, as DuckDB's `max_expression_depth`
/// (also 1000) does. `x IN (...)` lists are flat and not bounded by this.
pub const MAX_EXPRESSION_DEPTH: usize = 1000;

/// The context statements run in, with the command line's own settings.
pub(crate) struct Session {
    ctx: StreamContext,
    /// `SET statement_timeout`: how long one statement may run; `None`
    /// waits for ever (the default, and what `0` sets).
    statement_timeout: Option<Duration>,
}

impl Session {
    pub fn new(ctx: StreamContext) -> Self {
        Self::with_timeout(ctx, None)
    }

    /// A session whose `statement_timeout` is `timeout` (a server keeps it
    /// per connection between statements).
    pub fn with_timeout(ctx: StreamContext, timeout: Option<Duration>) -> Self {
        Self {
            ctx,
            statement_timeout: timeout,
        }
    }

    /// The session's `statement_timeout`.
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.statement_timeout
    }

    /// Runs `statement`. It is cancelled (its future dropped, which stops
    /// DataFusion's execution) when `statement_timeout` passes or `cancel`
    /// completes; either is an error located at the statement. A continuous
    /// query returns once planned, so the timeout bounds only its planning.
    pub async fn execute(
        &mut self,
        statement: &ParsedStatement,
        cancel: impl Future<Output = ()>,
    ) -> Result<SqlOutput> {
        if let Some(value) = statement_timeout_value(statement) {
            self.statement_timeout = parse_timeout(&value).map_err(|err| BrookError::Sql {
                message: format!("statement_timeout: {err}"),
                location: Some(statement.location),
            })?;
            return Ok(SqlOutput::Done);
        }
        check_expression_depth(statement)?;
        let cancelled = |reason: String| BrookError::Sql {
            message: format!("canceling statement due to {reason}"),
            location: Some(statement.location),
        };
        let timeout = async {
            match self.statement_timeout {
                Some(timeout) => tokio::time::sleep(timeout).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            output = self.ctx.execute(statement) => output,
            () = timeout => Err(cancelled(format!(
                "statement timeout ({}; SET statement_timeout = 0 turns it off)",
                self.statement_timeout.map(format_duration).unwrap_or_default()
            ))),
            () = cancel => Err(cancelled("user request".to_string())),
        }
    }
}

/// The value of `SET statement_timeout = value` (or `TO value`), as text.
fn statement_timeout_value(statement: &ParsedStatement) -> Option<String> {
    let BrookStatement::DataFusion(df_statement) = &statement.statement else {
        return None;
    };
    let DataFusionStatement::Statement(sql_statement) = df_statement.as_ref() else {
        return None;
    };
    let Statement::Set(Set::SingleAssignment {
        variable, values, ..
    }) = sql_statement.as_ref()
    else {
        return None;
    };
    if !variable
        .to_string()
        .eq_ignore_ascii_case("statement_timeout")
    {
        return None;
    }
    let text = match values.as_slice() {
        [Expr::Value(value)] => match &value.value {
            Value::SingleQuotedString(text) | Value::Number(text, _) => text.clone(),
            other => other.to_string(),
        },
        other => other
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "),
    };
    Some(text)
}

/// Refuses a statement whose expressions nest deeper than
/// [`MAX_EXPRESSION_DEPTH`], before DataFusion recurses through them.
fn check_expression_depth(statement: &ParsedStatement) -> Result<()> {
    let too_deep = match &statement.statement {
        BrookStatement::DataFusion(df_statement) => exceeds_depth(df_statement),
        BrookStatement::CreateSink(create) => exceeds_depth(&create.query),
        _ => false,
    };
    if too_deep {
        return Err(BrookError::Sql {
            message: format!(
                "an expression nests more than {MAX_EXPRESSION_DEPTH} operators deep \
                 (brook's limit); write long OR chains of equalities as x IN (...), \
                 or split the statement"
            ),
            location: Some(statement.location),
        });
    }
    Ok(())
}

fn exceeds_depth(statement: &DataFusionStatement) -> bool {
    let mut depth = ExpressionDepth::default();
    let visited = match statement {
        DataFusionStatement::Statement(statement) => statement.visit(&mut depth),
        DataFusionStatement::Explain(explain) => {
            return exceeds_depth(&explain.statement);
        }
        DataFusionStatement::CopyTo(copy) => match &copy.source {
            CopyToSource::Query(query) => query.visit(&mut depth),
            CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    };
    visited.is_break()
}

/// Tracks the nesting of expressions during a visit; stops the visit once
/// it passes the limit, so the visit itself never recurses deeper.
#[derive(Default)]
struct ExpressionDepth {
    depth: usize,
}

impl Visitor for ExpressionDepth {
    type Break = ();

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth > MAX_EXPRESSION_DEPTH {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parse_sql;

    fn chain(terms: usize) -> String {
        format!(
            "SELECT {} AS v",
            std::iter::repeat_n("1", terms)
                .collect::<Vec<_>>()
                .join(" + ")
        )
    }

    #[test]
    fn expressions_up_to_the_limit_pass_and_deeper_ones_are_refused() {
        let deep_enough = parse_sql(&chain(MAX_EXPRESSION_DEPTH)).unwrap();
        assert!(check_expression_depth(&deep_enough[0]).is_ok());
        let too_deep = parse_sql(&chain(MAX_EXPRESSION_DEPTH + 2)).unwrap();
        let err = check_expression_depth(&too_deep[0]).unwrap_err();
        assert!(err.to_string().contains("more than 1000"), "{err}");
        let wide = format!(
            "SELECT 1 IN ({})",
            (0..5000)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(check_expression_depth(&parse_sql(&wide).unwrap()[0]).is_ok());
        let explained = parse_sql(&format!("EXPLAIN {}", chain(2000))).unwrap();
        assert!(check_expression_depth(&explained[0]).is_err());
    }

    #[test]
    fn set_statement_timeout_is_read_in_any_spelling() {
        let value = |sql: &str| statement_timeout_value(&parse_sql(sql).unwrap()[0]);
        assert_eq!(value("SET statement_timeout = '5s'"), Some("5s".into()));
        assert_eq!(value("SET STATEMENT_TIMEOUT TO 0"), Some("0".into()));
        assert_eq!(value("SET datafusion.execution.batch_size = 10"), None);
    }
}
