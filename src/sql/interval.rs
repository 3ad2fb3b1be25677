//! Durations as users write them: `'3 seconds'`, `'500ms'`, `'1.5s'`, `'2 minutes'`.
//!
//! One grammar for `SET batch_interval`, `--batch-interval`, `--duration`,
//! `SET statement_timeout` and window sizes given as strings: arrow-cast's
//! interval parser, the one DataFusion reads `INTERVAL '...'` literals with.

use std::time::Duration;

use datafusion::arrow::compute::kernels::cast_utils::{
    IntervalParseConfig, IntervalUnit, parse_interval_month_day_nano_config,
};
use datafusion::arrow::datatypes::IntervalMonthDayNano;

use crate::error::{BrookError, Result};

/// The longest duration brook accepts: about 31 years, far past any
/// interval or timeout, and small enough that tick arithmetic cannot overflow.
const MAX_SECONDS: u64 = 1_000_000_000;

/// Parses a positive duration such as `3 seconds`, `500ms`, `1.5s`,
/// `100 milliseconds`, `2 min`, `1 hour` or `1 minute 30 seconds`. A bare
/// number is read as seconds. Zero, negative durations, and months or years
/// (which have no fixed length) are errors.
pub fn parse_duration(text: &str) -> Result<Duration> {
    match parse_non_negative(text)? {
        duration if duration.is_zero() => Err(invalid(text, "it must be greater than zero")),
        duration => Ok(duration),
    }
}

/// Parses a delay in the same grammar as [`parse_duration`], zero
/// included (a watermark `ts - INTERVAL '0' SECOND` is the same as `ts`).
pub fn parse_delay(text: &str) -> Result<Duration> {
    parse_non_negative(text)
}

/// Parses a timeout in the same grammar as [`parse_duration`]; zero means
/// no timeout (`None`), as PostgreSQL's `statement_timeout = 0` does.
pub fn parse_timeout(text: &str) -> Result<Option<Duration>> {
    parse_non_negative(text).map(|duration| (!duration.is_zero()).then_some(duration))
}

/// The duration of a parsed `INTERVAL` value; `text` names it in errors.
pub fn interval_duration(interval: IntervalMonthDayNano, text: &str) -> Result<Duration> {
    if interval.months != 0 {
        return Err(invalid(
            text,
            "months and years have no fixed length; use days, hours, minutes, seconds or milliseconds",
        ));
    }
    let days = i128::from(interval.days);
    let nanos = days * 86_400 * 1_000_000_000 + i128::from(interval.nanoseconds);
    if nanos < 0 {
        return Err(invalid(text, "it must not be negative"));
    }
    let nanos = u128::try_from(nanos).map_err(|_| invalid(text, "it must not be negative"))?;
    let seconds = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    if seconds > MAX_SECONDS {
        return Err(invalid(
            text,
            &format!(
                "it is longer than {} days, the longest duration brook accepts",
                MAX_SECONDS / 86_400
            ),
        ));
    }
    // Below 10^9, so it fits.
    let subsec_nanos = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(seconds, subsec_nanos))
}

fn parse_non_negative(text: &str) -> Result<Duration> {
    // arrow-cast splits on every whitespace character, so leading or
    // doubled spaces would read as an empty amount.
    let normalized = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let interval = parse_interval_month_day_nano_config(
        &normalized,
        IntervalParseConfig::new(IntervalUnit::Second),
    )
    .map_err(|_| {
        invalid(
            text,
            "expected a number and a unit, e.g. '3 seconds', '500ms', '2 minutes'",
        )
    })?;
    interval_duration(interval, text)
}

fn invalid(text: &str, why: &str) -> BrookError {
    BrookError::invalid(format!("invalid duration '{text}': {why}"))
}

/// A duration as users write it: `2s`, `500ms`, `1.5s`, `2min`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if !duration.as_nanos().is_multiple_of(1_000_000) {
        format!("{}µs", duration.as_micros())
    } else if millis.is_multiple_of(3_600_000) && millis > 0 {
        format!("{}h", millis / 3_600_000)
    } else if millis.is_multiple_of(60_000) && millis > 0 {
        format!("{}min", millis / 60_000)
    } else if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else if millis > 1000 {
        format!("{}s", millis as f64 / 1000.0)
    } else {
        format!("{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spellings_users_write() {
        assert_eq!(parse_duration("3 seconds").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(
            parse_duration("2 minutes").unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_duration(" 100 milliseconds ").unwrap(),
            Duration::from_millis(100)
        );
        assert_eq!(parse_duration("1 SECOND").unwrap(), Duration::from_secs(1));
        assert_eq!(
            parse_duration("1 minute 30 seconds").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(
            parse_duration("1 day").unwrap(),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in [
            "",
            "fast",
            "3 parsecs",
            "-1s",
            "1e400s",
            "1 month",
            "2 years",
        ] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.contains("invalid duration"), "{bad}: {err}");
        }
        assert_eq!(
            parse_duration("1 month").unwrap_err().to_string(),
            "invalid duration '1 month': months and years have no fixed length; \
             use days, hours, minutes, seconds or milliseconds"
        );
    }

    #[test]
    fn zero_and_negative_are_refused_with_one_message() {
        for zero in ["0", "0s", "0ms", "0 seconds"] {
            assert_eq!(
                parse_duration(zero).unwrap_err().to_string(),
                format!("invalid duration '{zero}': it must be greater than zero")
            );
        }
        assert_eq!(
            parse_duration("-5s").unwrap_err().to_string(),
            "invalid duration '-5s': it must not be negative"
        );
    }

    #[test]
    fn a_zero_timeout_means_none() {
        assert_eq!(parse_timeout("0").unwrap(), None);
        assert_eq!(parse_timeout("0ms").unwrap(), None);
        assert_eq!(parse_timeout("5s").unwrap(), Some(Duration::from_secs(5)));
        assert!(parse_timeout("-1s").is_err());
    }
}
