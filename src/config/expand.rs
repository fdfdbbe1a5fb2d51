//! `${VAR}` expansion (SPEC section 7) and its inverse for `--check`: the
//! serde helpers that expand string values at load, and the escapes that
//! print a value so it expands back to itself. The environment is the
//! only thing it reads.

use std::collections::BTreeMap;
use std::ffi::OsString;

use serde::{Deserialize, Deserializer, Serializer};

/// Expands `${VAR}`, `${VAR:-default}` and `$${` (a literal `${`) in `s`,
/// looking variables up with `lookup`. A `$` not followed by `{` is kept.
pub fn expand(s: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    expand_with(s, |name| Ok(lookup(name)))
}

/// [`expand`] with a lookup that can refuse a variable (the environment's
/// refuses a value that is not UTF-8: a silent default would hide it).
pub fn expand_with(
    s: &str,
    lookup: impl Fn(&str) -> Result<Option<String>, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unterminated ${{ in {s:?}: expected ${{VAR}} or ${{VAR:-default}}, or $${{ for a literal ${{"))?;
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!(
                    "invalid variable name {name:?} in {s:?}: expected letters, digits and _"
                ));
            }
            match (
                lookup(name)?.filter(|v| !(default.is_some() && v.is_empty())),
                default,
            ) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                    "environment variable {name} is not set: set it, or write ${{{name}:-default}}"
                ))
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A variable of drainit's environment; set but not UTF-8 is an error.
pub fn env_lookup(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "environment variable {name} is not valid UTF-8: expected text (config values are UTF-8)"
        )),
    }
}

/// serde helper: a string with `${VAR}` expanded from the environment.
pub fn expand_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = String::deserialize(d)?;
    expand_with(&raw, env_lookup).map_err(serde::de::Error::custom)
}

pub(super) fn expand_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    expand_string(d).map(Some)
}

/// serde helper: a list of strings, each expanded.
pub fn expand_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|s| expand_with(&s, env_lookup).map_err(serde::de::Error::custom))
        .collect()
}

/// serde helper: [`expand_vec`] as OS strings, for argv.
pub(super) fn expand_os_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<OsString>, D::Error> {
    Ok(expand_vec(d)?.into_iter().map(OsString::from).collect())
}

/// serde helper: a table of strings, values expanded.
pub fn expand_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    BTreeMap::<String, String>::deserialize(d)?
        .into_iter()
        .map(|(k, v)| {
            Ok((
                k,
                expand_with(&v, env_lookup).map_err(serde::de::Error::custom)?,
            ))
        })
        .collect()
}

/// `s` written so that [`expand`] gives it back: `${` becomes `$${`.
/// Every string value in the config is expanded at load, so the effective
/// config that `--check` prints must escape what expansion produced, or
/// reading that output back would expand it a second time.
pub fn escape(s: &str) -> String {
    s.replace("${", "$${")
}

/// serde helper: the counterpart of [`expand_string`] for printing.
pub fn escape_string<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&escape(v))
}

/// serde helper: the counterpart of an expanded `Option<String>`.
pub fn escape_opt<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(&escape(v)),
        None => s.serialize_none(),
    }
}

/// serde helper: the counterpart of [`expand_os_vec`]; an argument that is
/// not UTF-8 (only the command line can give one) is shown with U+FFFD.
pub(super) fn escape_os_vec<S: Serializer>(v: &[OsString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|item| escape(&item.to_string_lossy())))
}

/// serde helper: the counterpart of an expanded `Option<Vec<String>>`.
pub fn escape_opt_vec<S: Serializer>(v: &Option<Vec<String>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(&v.iter().map(|item| escape(item)).collect::<Vec<_>>()),
        None => s.serialize_none(),
    }
}

/// serde helper: the counterpart of [`expand_map`] (keys are not expanded).
pub fn escape_map<S: Serializer>(v: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, item)| (k, escape(item))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "POD_NAME" => Some("web-1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion() {
        assert_eq!(
            expand("http://${POD_NAME}/x", env),
            Ok("http://web-1/x".into())
        );
        assert_eq!(expand("${NOPE:-fallback}", env), Ok("fallback".into()));
        assert_eq!(expand("${EMPTY:-fallback}", env), Ok("fallback".into()));
        assert_eq!(expand("${EMPTY}", env), Ok(String::new()));
        assert_eq!(expand("$${POD_NAME}", env), Ok("${POD_NAME}".into()));
        assert_eq!(expand("cost $5 and $x", env), Ok("cost $5 and $x".into()));
        assert_eq!(
            expand("${POD_NAME}${POD_NAME}", env),
            Ok("web-1web-1".into())
        );
        let err = expand("${NOPE}", env).unwrap_err();
        assert!(err.contains("NOPE") && err.contains("not set"), "{err}");
        assert!(expand("${POD_NAME", env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(expand("${1X}", env)
            .unwrap_err()
            .contains("invalid variable name"));
    }

    #[test]
    fn a_refused_variable_is_an_error_even_with_a_default() {
        // Regression (issue 9): a value that was not UTF-8 read as unset,
        // so `${X:-d}` silently became `d`.
        let refuse = |name: &str| Err(format!("environment variable {name} is not valid UTF-8"));
        let err = expand_with("${X:-d}", refuse).unwrap_err();
        assert!(err.contains("X") && err.contains("UTF-8"), "{err}");
        assert_eq!(expand_with("no variable", refuse), Ok("no variable".into()));
    }
}
