//! Masking credentials in text brook shows: the one function every
//! statement text, error and option list passes through before it is
//! printed, served by the dashboard, listed by `SHOW QUERIES`, explained,
//! or kept in the REPL's history.

/// Words that make an option's key name a credential: `password`,
/// `kafka.sasl.password`, `s3.secret_access_key`, `session_token`, ...
const SECRET_KEY_WORDS: &[&str] = &["password", "passwd", "secret", "token"];

/// What replaces a credential.
pub const MASK: &str = "***";

/// `text` with its credentials replaced by [`MASK`]:
/// - the password of a URL: `postgres://user:secret@host` becomes
///   `postgres://user:***@host` (a password with `@` in it included);
/// - the value of a setting or option whose key names a credential (holds
///   `password`, `passwd`, `secret` or `token`), quoted or not, with its
///   quotes kept:
///   `'kafka.sasl.password' = 'x'`, `s3.secret_access_key = 'x'`,
///   `password=x` in a connection string or a URL's query.
///
/// Idempotent, and text with no credential comes back unchanged.
pub fn redact_secrets(text: &str) -> String {
    redact_secret_literals(&redact_secret_settings(&redact_url_passwords(text)))
}

/// A quoted value that follows a word naming a credential with no `=`
/// between (`OPTIONS (password 'x')`, `CREATE ROLE r PASSWORD 'x'`)
/// becomes [`MASK`].
fn redact_secret_literals(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut at = 0;
    while let Some(found) = text[at..].find('\'') {
        let quote = at + found;
        at = quote + 1;
        let before = &text[..quote];
        let word = before.trim_end();
        if word.len() == before.len() || quote < copied {
            continue;
        }
        let start = word
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_alphanumeric() || *c == '_')
            .last()
            .map(|(i, _)| i);
        let Some(start) = start else { continue };
        if !is_secret_key(&word[start..]) {
            continue;
        }
        let Some((value_start, end)) = value_at(text, quote) else {
            continue;
        };
        if text[value_start..end].starts_with(MASK) && end - value_start == MASK.len() {
            at = end + 1;
            continue;
        }
        out.push_str(&text[copied..value_start]);
        out.push_str(MASK);
        copied = end;
        at = end + 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// Ends of a value inside SQL text or a URL.
fn ends_value(c: char) -> bool {
    c.is_whitespace() || c == '\'' || c == '"'
}

/// `scheme://user:secret@host` becomes `scheme://user:***@host`. The
/// password runs from the first `:` to the last `@` before the path, so an
/// `@` in it is masked too.
fn redact_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority: up to the path, the end of the quoted value, a space.
        let authority_len = after
            .find(|c: char| c == '/' || ends_value(c))
            .unwrap_or(after.len());
        let authority = &after[..authority_len];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &after[authority_len..];
    }
    out.push_str(rest);
    out
}

/// The value of every `key = value` whose key names a credential becomes
/// [`MASK`].
fn redact_secret_settings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut at = 0;
    while let Some(found) = text[at..].find('=') {
        let equals = at + found;
        at = equals + 1;
        if !is_assignment(text, equals) || !key_before(text, equals).is_some_and(is_secret_key) {
            continue;
        }
        let value_start =
            equals + 1 + (text[equals + 1..].len() - text[equals + 1..].trim_start().len());
        let Some((start, end)) = value_at(text, value_start) else {
            continue;
        };
        out.push_str(&text[copied..start]);
        out.push_str(MASK);
        copied = end;
        at = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Whether the `=` at `equals` assigns (not `<=`, `>=`, `!=`, `==`, `=>`).
fn is_assignment(text: &str, equals: usize) -> bool {
    let before = text[..equals].chars().next_back();
    let after = text[equals + 1..].chars().next();
    !matches!(before, Some('<' | '>' | '!' | '=' | ':')) && !matches!(after, Some('=' | '>'))
}

/// The key of the `=` at `equals`: a quoted name (`'kafka.sasl.password'`,
/// `"password"`) or a bare one (`s3.secret_access_key`, `password`).
fn key_before(text: &str, equals: usize) -> Option<&str> {
    let before = text[..equals].trim_end();
    let last = before.chars().next_back()?;
    if matches!(last, '\'' | '"' | '`') {
        let inside = &before[..before.len() - 1];
        let open = inside.rfind(last)?;
        return Some(&inside[open + 1..]);
    }
    let start = before
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .last()
        .map(|(i, _)| i)?;
    Some(&before[start..])
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_WORDS.iter().any(|word| key.contains(word))
}

/// The byte range of the value that starts at `start`: inside its quotes
/// (`'...'` or `"..."`, a doubled quote being one inside the value), or a
/// bare word up to a space, a quote, `,`, `;`, `)` or `&`. `None` when
/// there is no value.
fn value_at(text: &str, start: usize) -> Option<(usize, usize)> {
    let rest = &text[start..];
    let first = rest.chars().next()?;
    if matches!(first, '\'' | '"') {
        let inside = start + 1;
        let bytes = text.as_bytes();
        let quote = first as u8;
        let mut end = inside;
        while end < text.len() {
            if bytes[end] == quote {
                if bytes.get(end + 1) == Some(&quote) {
                    end += 2;
                    continue;
                }
                break;
            }
            end += 1;
        }
        return Some((inside, end.min(text.len())));
    }
    let len = rest
        .find(|c: char| ends_value(c) || matches!(c, ',' | ';' | ')' | '&'))
        .unwrap_or(rest.len());
    (len > 0).then_some((start, start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked_in_every_url_and_the_rest_is_kept() {
        assert_eq!(
            redact_secrets(
                "url = 'postgres://bob:s3cr%40t@127.0.0.1:5432/db', backup = 'mysql://al:pw@b.example'"
            ),
            "url = 'postgres://bob:***@127.0.0.1:5432/db', backup = 'mysql://al:***@b.example'"
        );
        assert_eq!(
            redact_secrets("cannot connect to postgres://u:pw@h:5432: refused"),
            "cannot connect to postgres://u:***@h:5432: refused"
        );
    }

    #[test]
    fn an_at_sign_in_a_url_password_is_masked_with_it() {
        assert_eq!(
            redact_secrets("'postgres://bob:p@ss@word@db.example/app'"),
            "'postgres://bob:***@db.example/app'"
        );
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        for text in [
            "a://b@c d://e:f",
            "kafka://broker:9092/topic",
            "postgres://bob@db/app",
            "no secrets here",
            "",
        ] {
            assert_eq!(redact_secrets(text), text);
        }
    }

    #[test]
    fn options_naming_a_credential_are_masked_quoted_or_not() {
        assert_eq!(
            redact_secrets(
                "WITH (connector = 'kafka', 'kafka.sasl.password' = 'hunter2', topic = 't')"
            ),
            "WITH (connector = 'kafka', 'kafka.sasl.password' = '***', topic = 't')"
        );
        assert_eq!(
            redact_secrets("s3.secret_access_key = 'AbC/9', s3.access_key_id = 'AKIA1'"),
            "s3.secret_access_key = '***', s3.access_key_id = 'AKIA1'"
        );
        assert_eq!(
            redact_secrets("\"session_token\"=\"t0k\" PASSWORD = \"x y\""),
            "\"session_token\"=\"***\" PASSWORD = \"***\""
        );
        assert_eq!(
            redact_secrets("host=h password=hunter2 dbname=d"),
            "host=h password=*** dbname=d"
        );
        assert_eq!(
            redact_secrets("host=h password='two words' user=u"),
            "host=h password='***' user=u"
        );
        assert_eq!(
            redact_secrets("postgres://h/db?user=u&password=pw&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
    }

    #[test]
    fn a_doubled_quote_inside_a_secret_is_part_of_it() {
        assert_eq!(
            redact_secrets("password = 'it''s, secret', user = 'u'"),
            "password = '***', user = 'u'"
        );
    }

    #[test]
    fn comparisons_and_other_keys_are_not_options() {
        for text in [
            "WHERE password <> 'x' AND token >= 3 AND secret != 'y'",
            "topic = 'passwords', url = 'http://example/secret'",
            "password authentication failed for user bob",
            "password = ",
        ] {
            assert_eq!(redact_secrets(text), text);
        }
    }

    #[test]
    fn a_secret_given_without_an_equals_sign_is_masked() {
        assert_eq!(
            redact_secrets("CREATE SERVER s OPTIONS (host 'db', password 'p@ss word')"),
            "CREATE SERVER s OPTIONS (host 'db', password '***')"
        );
        assert_eq!(
            redact_secrets("CREATE ROLE r WITH LOGIN PASSWORD 'it''s'"),
            "CREATE ROLE r WITH LOGIN PASSWORD '***'"
        );
        assert_eq!(
            redact_secrets("SELECT 'password' AS p"),
            "SELECT 'password' AS p"
        );
        assert_eq!(
            redact_secrets("WHERE word = 'token'"),
            "WHERE word = 'token'"
        );
    }

    #[test]
    fn masking_twice_is_masking_once() {
        let once = redact_secrets(
            "CREATE SINK s WITH (url = 'postgres://u:p@h/d', 'kafka.sasl.password' = 'x')",
        );
        assert!(!once.contains("p@h") && !once.contains("'x'"), "{once}");
        assert_eq!(redact_secrets(&once), once);
    }
}
