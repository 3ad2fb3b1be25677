//! Connector and sink options as typed configuration: each kind declares
//! its options once ([`OptionSpec`]: key, default, meaning); parsing
//! `WITH (...)`, the error for an unknown key (which names the known ones)
//! and the `SHOW` text all come from that one list.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::error::{BrookError, Result};

/// brook's one spelling of a boolean, in options, `SET` and meta-commands
/// alike (PostgreSQL's): `true` / `false`, `on` / `off`, `yes` / `no`,
/// `1` / `0`, in any case.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Some(true),
        "false" | "off" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// One option a connector or sink takes.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// The key, as written in `WITH (key = 'value')`.
    pub key: &'static str,
    /// The default as a user would write it; `None` when there is none
    /// (required, or off).
    pub default: Option<&'static str>,
    /// What the option means.
    pub help: &'static str,
}

/// Reads one `WITH (...)` list against the options a kind declares.
pub(crate) struct OptionReader<'a> {
    /// Whose options these are, for messages: `stream 'lines'`.
    owner: String,
    given: BTreeMap<&'a str, &'a str>,
}

impl<'a> OptionReader<'a> {
    /// Refuses a key given twice, and any key not in `specs` (naming the
    /// known ones).
    pub fn new(
        owner: String,
        options: &'a [(String, String)],
        specs: &[OptionSpec],
    ) -> Result<Self> {
        let mut given = BTreeMap::new();
        for (key, value) in options {
            if given.insert(key.as_str(), value.as_str()).is_some() {
                return Err(BrookError::invalid(format!(
                    "{owner}: option '{key}' is given twice"
                )));
            }
        }
        if let Some(unknown) = given
            .keys()
            .find(|key| !specs.iter().any(|s| s.key == **key))
        {
            let known: Vec<&str> = specs.iter().map(|s| s.key).collect();
            return Err(BrookError::invalid(format!(
                "{owner}: unknown option '{unknown}' for this connector (known: {})",
                known.join(", ")
            )));
        }
        Ok(Self { owner, given })
    }

    /// An error about `key`'s value.
    pub fn bad(&self, key: &str, message: impl std::fmt::Display) -> BrookError {
        BrookError::invalid(format!("{}: {key} {message}", self.owner))
    }

    /// The text of `key`, if given.
    pub fn text(&self, key: &str) -> Option<&'a str> {
        self.given.get(key).copied()
    }

    /// `key` as a boolean ([`parse_bool`]).
    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.text(key)
            .map(|value| {
                parse_bool(value).ok_or_else(|| {
                    self.bad(
                        key,
                        format_args!("must be 'true' or 'false', got '{value}'"),
                    )
                })
            })
            .transpose()
    }

    /// `key` as a number greater than zero.
    pub fn positive<T: FromStr + PartialOrd + Default>(&self, key: &str) -> Result<Option<T>> {
        self.text(key)
            .map(|value| {
                value
                    .parse::<T>()
                    .ok()
                    .filter(|n| *n > T::default())
                    .ok_or_else(|| {
                        self.bad(
                            key,
                            format_args!("must be a positive number, got '{value}'"),
                        )
                    })
            })
            .transpose()
    }

    /// `key` as one of `choices` (case-insensitive).
    pub fn choice<T: Copy>(&self, key: &str, choices: &[(&str, T)]) -> Result<Option<T>> {
        self.text(key)
            .map(|value| {
                let lower = value.to_ascii_lowercase();
                choices
                    .iter()
                    .find(|(name, _)| *name == lower)
                    .map(|(_, choice)| *choice)
                    .ok_or_else(|| {
                        let names: Vec<String> = choices
                            .iter()
                            .map(|(name, _)| format!("'{name}'"))
                            .collect();
                        self.bad(
                            key,
                            format_args!("must be {}, got '{value}'", names.join(" or ")),
                        )
                    })
            })
            .transpose()
    }
}

/// `key = 'value', ...` in the order of `specs`, for the options `value_of`
/// gives a value (the values in effect, defaults included).
pub(crate) fn describe(specs: &[OptionSpec], value_of: impl Fn(&str) -> Option<String>) -> String {
    specs
        .iter()
        .filter(|spec| spec.key != "connector")
        .filter_map(|spec| value_of(spec.key).map(|value| format!("{} = '{value}'", spec.key)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_boolean_spelling_reads_every_form_in_any_case_and_nothing_else() {
        for yes in ["true", "ON", "Yes", "1", " true "] {
            assert_eq!(parse_bool(yes), Some(true), "{yes}");
        }
        for no in ["false", "OFF", "no", "0"] {
            assert_eq!(parse_bool(no), Some(false), "{no}");
        }
        for neither in ["", "t", "2", "enabled"] {
            assert_eq!(parse_bool(neither), None, "{neither}");
        }
    }
}
