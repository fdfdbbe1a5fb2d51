//! The syntax of a user spec (`app.user`, an exec step's `user`):
//! `"uid[:gid]"` or `"name[:group]"`.
//!
//! Config owns names and syntax, init owns what runs: this module checks
//! the form of a spec at load, so a bad one is a config error naming its
//! key, and never reads a file. Looking the names up in the image's
//! `/etc/passwd` and `/etc/group` is `init::user`, at spawn time.

/// A parsed user spec, before lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub user: String,
    pub group: Option<String>,
}

/// A user spec that is not `"uid[:gid]"` nor `"name[:group]"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid user {0:?}: expected \"uid[:gid]\" or \"name[:group]\"")]
pub struct SyntaxError(pub String);

/// Checks the form of a user spec without looking anything up: one or two
/// non-empty parts, split by one `:`, with no whitespace.
pub fn parse_spec(s: &str) -> Result<Spec, SyntaxError> {
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let ok =
        |part: &str| !part.is_empty() && !part.contains(|c: char| c == ':' || c.is_whitespace());
    if !ok(user) || group.is_some_and(|g| !ok(g)) {
        return Err(SyntaxError(s.to_string()));
    }
    Ok(Spec {
        user: user.to_string(),
        group: group.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            parse_spec("1000"),
            Ok(Spec {
                user: "1000".into(),
                group: None
            })
        );
        assert_eq!(
            parse_spec("app:staff"),
            Ok(Spec {
                user: "app".into(),
                group: Some("staff".into())
            })
        );
        assert!(parse_spec("").is_err());
        assert!(parse_spec("a:").is_err());
        assert!(parse_spec(":1").is_err());
        assert!(parse_spec("a:b:c").is_err());
        assert_eq!(
            parse_spec("a b").map_err(|e| e.to_string()),
            Err(r#"invalid user "a b": expected "uid[:gid]" or "name[:group]""#.to_string())
        );
    }
}
