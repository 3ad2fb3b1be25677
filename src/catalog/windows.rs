//! The window table functions: how a query names the window it reads a
//! stream through.
//!
//! Three table functions read a stream through a window:
//!
//! - `HOP(stream, slide, size)`: sliding windows of `size`, one every
//!   `slide` (argument order as in RisingWave's `HOP`);
//! - `TUMBLE(stream, size)`: windows of `size` that do not overlap;
//! - `RUNNING(stream [, 'complete' | 'update'])`: one ever-growing window
//!   since the query started (Spark's `updateStateByKey`, Structured
//!   Streaming's complete and update output modes).
//!
//! `HOP` and `TUMBLE` add `window_start` and `window_end` columns. Windows
//! are made of whole micro-batches (processing time), so size and slide must
//! be multiples of the batch interval.
//!
//! How a window query runs is the business of the engines
//! ([`crate::engine`]); this module only names the window a scan reads.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Diagnostic, ScalarValue};
use datafusion::error::{DataFusionError, Result as DataFusionResult};
use datafusion::logical_expr::Expr;

use super::StreamMap;
use super::stream_table::StreamTable;
pub(crate) use super::window_kind::{EventShape, EventWindow, SlidingWindow, WindowKind};
pub use super::window_kind::{OutputMode, WINDOW_END, WINDOW_START, window_time_type};
pub(crate) use crate::sql::format_duration;
use crate::sql::{interval_duration, parse_duration};
use crate::stream::LiveStream;
use crate::stream::clock::Batcher;
use datafusion::arrow::datatypes::IntervalMonthDayNano;

/// Which window table function.
#[derive(Debug, Clone, Copy)]
enum Function {
    Hop,
    Tumble,
    Running,
    Session,
}

impl Function {
    fn name(self) -> &'static str {
        match self {
            Function::Hop => "HOP",
            Function::Tumble => "TUMBLE",
            Function::Running => "RUNNING",
            Function::Session => "SESSION",
        }
    }

    /// How to call the function; `event_time`: the form with a time column.
    fn usage(self, event_time: bool) -> &'static str {
        match (self, event_time) {
            (Function::Hop, false) => "HOP(stream, INTERVAL 'slide', INTERVAL 'size')",
            (Function::Hop, true) => "HOP(stream, time_column, INTERVAL 'slide', INTERVAL 'size')",
            (Function::Tumble, false) => "TUMBLE(stream, INTERVAL 'size')",
            (Function::Tumble, true) => "TUMBLE(stream, time_column, INTERVAL 'size')",
            (Function::Running, _) => "RUNNING(stream [, 'complete' | 'update'])",
            (Function::Session, _) => "SESSION(stream, time_column, INTERVAL 'gap')",
        }
    }
}

/// `HOP`, `TUMBLE` or `RUNNING` as a DataFusion table function.
#[derive(Debug)]
pub(crate) struct WindowFunction {
    function: Function,
    streams: StreamMap,
    batcher: Arc<Batcher>,
}

/// The three window table functions, under the names users call them by.
pub(crate) fn table_functions(
    streams: &StreamMap,
    batcher: &Arc<Batcher>,
) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    [
        ("hop", Function::Hop),
        ("tumble", Function::Tumble),
        ("running", Function::Running),
        ("session", Function::Session),
    ]
    .into_iter()
    .map(|(name, function)| {
        let implementation: Arc<dyn TableFunctionImpl> = Arc::new(WindowFunction {
            function,
            streams: Arc::clone(streams),
            batcher: Arc::clone(batcher),
        });
        (name, implementation)
    })
    .collect()
}

impl TableFunctionImpl for WindowFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DataFusionResult<Arc<dyn TableProvider>> {
        let function = self.function;
        let exprs = args.exprs();
        // Errors point at the stream argument (the only one with a span).
        let span = match exprs.first() {
            Some(Expr::Column(column)) => column.spans().first(),
            _ => None,
        };
        let plan_error = |message: String| {
            let message = format!("{}: {message}", function.name());
            DataFusionError::Plan(message.clone())
                .with_diagnostic(Diagnostic::new_error(message, span))
        };
        // The event-time forms name a column second.
        let time_column = match exprs.get(1) {
            Some(Expr::Column(column)) if column.relation.is_none() => Some(column.name.clone()),
            _ => None,
        };
        let event_form = time_column.is_some();
        check_arity(function, exprs, event_form).map_err(plan_error)?;
        let stream_name = match &exprs[0] {
            Expr::Column(column) if column.relation.is_none() => column.name.clone(),
            other => {
                return Err(plan_error(format!(
                    "the first argument is the stream to read, not {other}; expected {}",
                    function.usage(event_form)
                )));
            }
        };
        let stream = self.streams.read().get(&stream_name).cloned();
        let Some(stream) = stream else {
            return Err(plan_error(format!(
                "'{stream_name}' is not a stream; windows read streams (SHOW STREAMS lists them)"
            )));
        };
        let kind = match (function, time_column) {
            (Function::Session, None) => Err(format!(
                "the second argument is the stream's event-time column; expected {}",
                function.usage(event_form)
            )),
            (Function::Hop | Function::Tumble | Function::Session, Some(column)) => {
                check_event_time_column(&stream, &stream_name, &column)
                    .and_then(|()| event_window(function, exprs))
            }
            (Function::Running, _) => output_mode(exprs.get(1)).map(WindowKind::Running),
            (Function::Hop | Function::Tumble, None) => {
                sliding_window(function, exprs, self.batcher.batch_interval())
            }
        }
        .map_err(plan_error)?;
        let schema = windowed_schema(&stream, &stream_name, &kind).map_err(plan_error)?;
        Ok(Arc::new(StreamTable {
            name: stream_name,
            schema,
            window: Some(kind),
        }))
    }
}

/// Checks the number of arguments against the form being called;
/// `event_form`: the form with a time column.
fn check_arity(function: Function, exprs: &[Expr], event_form: bool) -> Result<(), String> {
    let arity_ok = match (function, event_form) {
        (Function::Hop, false) => exprs.len() == 3,
        (Function::Hop, true) => exprs.len() == 4,
        (Function::Tumble, false) => exprs.len() == 2,
        (Function::Tumble, true) | (Function::Session, _) => exprs.len() == 3,
        (Function::Running, _) => matches!(exprs.len(), 1 | 2),
    };
    if arity_ok {
        return Ok(());
    }
    Err(format!(
        "expected {}, got {} argument{}",
        function.usage(event_form),
        exprs.len(),
        if exprs.len() == 1 { "" } else { "s" }
    ))
}

/// Checks that `column` is the event-time column `stream` declares.
fn check_event_time_column(
    stream: &LiveStream,
    stream_name: &str,
    column: &str,
) -> Result<(), String> {
    let declared = stream.event_time();
    if declared.filter(|e| e.column == column).is_some() {
        return Ok(());
    }
    let why = match stream.event_time() {
        Some(e) => format!("its event-time column is '{}'", e.column),
        None => format!(
            "it declares no event time (CREATE STREAM {stream_name} (..., {column} TIMESTAMP, WATERMARK FOR {column} AS {column} - INTERVAL '5' SECOND) ...)"
        ),
    };
    Err(format!(
        "'{column}' is not an event-time column of stream '{stream_name}': {why}"
    ))
}

/// The event-time window of `HOP`, `TUMBLE` or `SESSION` called with a time
/// column (`exprs[1]`), its durations in the arguments after it.
fn event_window(function: Function, exprs: &[Expr]) -> Result<WindowKind, String> {
    let shape = match function {
        Function::Hop => {
            let slide = whole_millis(&exprs[2], "slide")?;
            let size = whole_millis(&exprs[3], "size")?;
            if slide > size {
                return Err(
                    "the slide must not exceed the size (rows between windows would belong to none); use TUMBLE for windows that do not overlap".into(),
                );
            }
            EventShape::Hop { slide, size }
        }
        Function::Tumble => {
            let size = whole_millis(&exprs[2], "size")?;
            EventShape::Hop { slide: size, size }
        }
        _ => EventShape::Session {
            gap: whole_millis(&exprs[2], "gap")?,
        },
    };
    Ok(WindowKind::Event(EventWindow {
        function: function.name(),
        shape,
    }))
}

/// An event-time window's slide, size or gap: a positive whole number of
/// milliseconds.
fn whole_millis(expr: &Expr, what: &str) -> Result<i64, String> {
    let duration = duration_arg(expr, what)?;
    let whole = duration.as_nanos().is_multiple_of(1_000_000);
    if duration.is_zero() {
        return Err(format!("the {what} must be greater than zero"));
    }
    match i64::try_from(duration.as_millis()) {
        Ok(ms) if whole && ms > 0 => Ok(ms),
        _ => Err(format!(
            "the {what} must be a whole number of milliseconds, not {}",
            format_duration(duration)
        )),
    }
}

/// `RUNNING`'s output mode, from its optional second argument.
fn output_mode(arg: Option<&Expr>) -> Result<OutputMode, String> {
    let Some(expr) = arg else {
        return Ok(OutputMode::Complete);
    };
    match literal_text(expr).as_deref().map(str::to_ascii_lowercase) {
        Some(mode) if mode == "complete" => Ok(OutputMode::Complete),
        Some(mode) if mode == "update" => Ok(OutputMode::Update),
        _ => Err(format!(
            "the output mode is 'complete' or 'update', not {expr}"
        )),
    }
}

/// The processing-time window of `HOP` or `TUMBLE` called without a time
/// column, checked against the batch `interval`.
fn sliding_window(
    function: Function,
    exprs: &[Expr],
    interval: Duration,
) -> Result<WindowKind, String> {
    let (slide, size) = match function {
        Function::Hop => (
            duration_arg(&exprs[1], "slide")?,
            duration_arg(&exprs[2], "size")?,
        ),
        _ => {
            let size = duration_arg(&exprs[1], "size")?;
            (size, size)
        }
    };
    let window = SlidingWindow {
        function: function.name(),
        size,
        slide,
        interval,
    };
    validate(&window)?;
    Ok(WindowKind::Sliding(window))
}

/// The schema a scan through `kind` reads: the stream's columns, then
/// `window_start` and `window_end` for the windows that add them.
fn windowed_schema(
    stream: &LiveStream,
    stream_name: &str,
    kind: &WindowKind,
) -> Result<SchemaRef, String> {
    let mut fields: Vec<Field> = stream
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    if let WindowKind::Sliding(_) | WindowKind::Event(_) = kind {
        for name in [WINDOW_START, WINDOW_END] {
            if stream.schema.field_with_name(name).is_ok() {
                return Err(format!(
                    "stream '{stream_name}' already has a column named {name}, which the window adds"
                ));
            }
            // Nullable: incremental windows aggregate each batch before
            // its windows are known, with the window columns still null.
            fields.push(Field::new(name, window_time_type(), true));
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Checks that size and slide are positive multiples of the batch interval
/// and that the slide does not exceed the size.
fn validate(window: &SlidingWindow) -> Result<(), String> {
    let interval = window.interval.as_nanos();
    let multiple = |d: Duration| d.as_nanos() > 0 && d.as_nanos().is_multiple_of(interval);
    let describe = if window.function == "TUMBLE" {
        format!("size {}", format_duration(window.size))
    } else {
        format!(
            "slide {} and size {}",
            format_duration(window.slide),
            format_duration(window.size)
        )
    };
    if !multiple(window.size) || !multiple(window.slide) {
        let must = if window.function == "TUMBLE" {
            "must be a positive multiple"
        } else {
            "must be positive multiples"
        };
        return Err(format!(
            "{describe} {must} of the batch interval ({})",
            format_duration(window.interval)
        ));
    }
    if window.slide > window.size {
        return Err(format!(
            "{describe}: the slide must not exceed the size (the batches between windows would belong to none); use TUMBLE for windows that do not overlap"
        ));
    }
    Ok(())
}

/// A string literal's text.
fn literal_text(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Literal(ScalarValue::Utf8(Some(text)), _)
        | Expr::Literal(ScalarValue::Utf8View(Some(text)), _)
        | Expr::Literal(ScalarValue::LargeUtf8(Some(text)), _) => Some(text.clone()),
        _ => None,
    }
}

/// A window size or slide: `INTERVAL '2 seconds'` or a string like `'2s'`.
fn duration_arg(expr: &Expr, what: &str) -> Result<Duration, String> {
    let bad = || format!("the {what} must be an interval such as INTERVAL '2 seconds', not {expr}");
    match expr {
        // The same rules as every other duration (sql::interval).
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(value)), _) => {
            interval_duration(*value, &interval_text(*value)).map_err(|e| e.to_string())
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(value)), _) => {
            let value =
                IntervalMonthDayNano::new(0, value.days, i64::from(value.milliseconds) * 1_000_000);
            interval_duration(value, &interval_text(value)).map_err(|e| e.to_string())
        }
        _ => match literal_text(expr) {
            Some(text) => parse_duration(&text).map_err(|e| e.to_string()),
            None => Err(bad()),
        },
    }
}

/// An interval as a user would write it inside `INTERVAL '...'`.
fn interval_text(value: IntervalMonthDayNano) -> String {
    let mut parts = Vec::new();
    if value.months != 0 {
        parts.push(format!("{} months", value.months));
    }
    if value.days != 0 {
        parts.push(format!("{} days", value.days));
    }
    if value.nanoseconds != 0 || parts.is_empty() {
        parts.push(format!("{} nanoseconds", value.nanoseconds));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_users_write_them() {
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2min");
    }

    #[test]
    fn windows_must_be_multiples_of_the_interval() {
        let window = |slide: u64, size: u64| SlidingWindow {
            function: "HOP",
            size: Duration::from_millis(size),
            slide: Duration::from_millis(slide),
            interval: Duration::from_secs(1),
        };
        assert!(validate(&window(1000, 3000)).is_ok());
        let err = validate(&window(1000, 2500)).unwrap_err();
        assert_eq!(
            err,
            "slide 1s and size 2.5s must be positive multiples of the batch interval (1s)"
        );
        assert!(validate(&window(0, 2000)).is_err());
        assert!(
            validate(&window(3000, 2000))
                .unwrap_err()
                .contains("must not exceed")
        );
    }
}
