//! Durations as users write them: `'3 seconds'`, `'500ms'`, `'1.5s'`, `'2 minutes'`.

use std::time::Duration;

use crate::error::{BrookError, Result};

/// Parses a duration such as `3 seconds`, `500ms`, `1.5s`, `100 milliseconds`,
/// `2 min` or `1 hour`. A bare number is read as seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let trimmed = text.trim();
    let split_at = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split_at);
    let bad = || {
        BrookError::invalid(format!(
            "invalid duration '{text}': expected a number and a unit, e.g. '3 seconds', '500ms', '2 minutes'"
        ))
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds_per_unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1e-3,
        "us" | "µs" | "micros" | "microsecond" | "microseconds" => 1e-6,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hour" | "hours" => 3600.0,
        _ => return Err(bad()),
    };
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
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
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in ["", "fast", "3 parsecs", "-1s", "1e400s"] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.contains("invalid duration"), "{bad}: {err}");
        }
    }
}
