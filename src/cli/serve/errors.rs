//! brook's errors as PostgreSQL errors: a SQLSTATE by whose fault and what
//! kind, and the message psql shows after `ERROR:`. Credentials masked.

use pgwire::error::{ErrorInfo, PgWireError};

use crate::error::{BrookError, ErrorKind};
use crate::redact::redact_secrets;

/// `err` as the `ErrorResponse` a client gets.
pub(super) fn error_info(err: &BrookError) -> ErrorInfo {
    let message = redact_secrets(&err.to_string());
    let code = sqlstate(err, &message);
    let mut info = ErrorInfo::new("ERROR".to_string(), code.to_string(), message);
    if let Some(location) = err.location() {
        info.hint = Some(format!("at {location} of the statement"));
    }
    info
}

/// A user's error with `code` and `message`.
pub(super) fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        redact_secrets(&message),
    )))
}

fn sqlstate(err: &BrookError, message: &str) -> &'static str {
    let lower = message.to_ascii_lowercase();
    if lower.contains("canceling statement") {
        return "57014"; // query_canceled
    }
    match err {
        BrookError::Sql { .. }
            if lower.contains("not found") || lower.contains("does not exist") =>
        {
            "42P01" // undefined_table
        }
        BrookError::Sql { .. } if lower.contains("no field named") => "42703", // undefined_column
        BrookError::Sql { .. } => "42601",                                     // syntax_error
        BrookError::BadRow { .. } => "22000",                                  // data_exception
        _ => match err.kind() {
            ErrorKind::User if lower.contains("does not exist") => "42704", // undefined_object
            ErrorKind::User if lower.contains("already exists") => "42710", // duplicate_object
            ErrorKind::User => "22023",     // invalid_parameter_value
            ErrorKind::External => "58000", // system_error
            _ => "XX000",                   // internal_error
        },
    }
}
