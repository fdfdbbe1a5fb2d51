//! What an http step's or check's URL may be, and what it may show
//! (SPEC sections 6 and 7).
//!
//! This module owns the load-time rules for the text an http request is
//! made of: [`parse_url`] turns a URL into the [`Target`] a connection
//! needs or says why it cannot, [`check_header`] refuses a header HTTP
//! forbids, and [`redact_url`] drops userinfo, query and fragment before a
//! URL goes into a name, an error or the log. Config checks with it at
//! load and `lifecycle::client` connects with it, so a URL that loads is one
//! the client can use. It never connects nor resolves a name.

use hyper::header::{HeaderName, HeaderValue};
use hyper::Uri;

/// Why a URL is refused: the URL as [`redact_url`] shows it, and why.
/// It never holds userinfo, a query or a fragment: it reaches `/status`,
/// the log and load errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid url {url:?}: {why}")]
pub struct InvalidUrl {
    /// The URL, redacted.
    pub url: String,
    /// What is wrong with it.
    pub why: String,
}

impl InvalidUrl {
    /// `url` refused for `why`; `url` is redacted here.
    pub fn new(url: &str, why: impl Into<String>) -> InvalidUrl {
        InvalidUrl {
            url: redact_url(url),
            why: why.into(),
        }
    }
}

/// Where a URL points, as far as a connection is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    /// The host as written (`[::1]` keeps its brackets), for DNS and `Host`.
    pub host: String,
    pub port: u16,
    /// `Host` header value: the host, and the port when one was written.
    pub authority: String,
    /// Origin-form request target, `/` when the URL has no path.
    pub path_and_query: String,
}

/// Parses an `http://` or `https://` URL into a [`Target`].
pub fn parse_url(url: &str) -> Result<Target, InvalidUrl> {
    let bad = |why: &str| InvalidUrl::new(url, why);
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => {
            return Err(bad(&format!(
                "unsupported scheme {other:?}: expected http or https"
            )))
        }
        None => return Err(bad("expected http://host[:port]/path or https://...")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    let host = authority.host();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    // The parser takes any text after the last ':' for a port and drops
    // one that is no number: the request would go to port 80 instead.
    let port_text = authority
        .as_str()
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.contains(']') && !p.is_empty());
    if port_text.is_some() && authority.port_u16().is_none() {
        return Err(bad(
            "the port is not a number from 0 to 65535 (a ':', '/', '?' or '#' in a user name or password must be percent-encoded)",
        ));
    }
    let explicit_port = authority.port_u16();
    let port = explicit_port.unwrap_or(if tls { 443 } else { 80 });
    let authority = match explicit_port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let path_and_query = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    // `http://h?x` parses with an empty path; origin-form needs the slash.
    let path_and_query = if path_and_query.starts_with('/') {
        path_and_query
    } else {
        format!("/{path_and_query}")
    };
    Ok(Target {
        tls,
        host: host.to_string(),
        port,
        authority,
        path_and_query,
    })
}

/// `url` without what may be secret: userinfo (`user:pass@`), query and
/// fragment. For names, errors and the log; works on any text (a URL with
/// `${VAR}` left in it too), not only on URLs that parse.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let path = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
    if let Some(i) = authority.rfind('@') {
        return format!("{scheme}{}{path}", &authority[i + 1..]);
    }
    // A userinfo with a raw '/', '?' or '#' (a secret not percent-encoded)
    // ends the authority early: what is left of it shows as a port that is
    // no number, or its '@' lands in the path. Show neither piece.
    if let Some(i) = path.rfind('@') {
        return format!("{scheme}…{}", &path[i + 1..]);
    }
    if !port_is_plain(authority) {
        return format!("{scheme}…");
    }
    format!("{scheme}{authority}{path}")
}

/// Whether the authority's port, if any, is digits (or a `${VAR}` not
/// expanded yet): else the "port" is a piece of a userinfo.
fn port_is_plain(authority: &str) -> bool {
    let after_host = match authority.rfind(']') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    match after_host.rfind(':') {
        Some(i) => {
            let port = &after_host[i + 1..];
            port.contains("${") || port.bytes().all(|b| b.is_ascii_digit())
        }
        None => true,
    }
}

/// Checks a header as the client will send it, for load time: `Err` says
/// what is wrong without showing the value.
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        format!(
            "invalid header name {name:?}: expected a token (letters, digits and !#$%&'*+-.^_`|~)"
        )
    })?;
    HeaderValue::from_str(value).map_err(|_| {
        format!("invalid value for header {name:?} (not shown): expected visible ASCII, spaces and tabs, no line breaks")
    })?;
    Ok(())
}

/// Why an https URL is refused by a build without the `https` feature.
pub const NO_HTTPS: &str =
    "https is not supported by this build of drainit (built without the `https` cargo feature)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("http://example.com").unwrap();
        assert_eq!(
            t,
            Target {
                tls: false,
                host: "example.com".into(),
                port: 80,
                authority: "example.com".into(),
                path_and_query: "/".into()
            }
        );
        let t = parse_url("https://u:p@[::1]:8443/a/b?c=d").unwrap();
        assert!(t.tls);
        assert_eq!(t.host, "[::1]");
        assert_eq!(t.port, 8443);
        assert_eq!(t.authority, "[::1]:8443");
        assert_eq!(t.path_and_query, "/a/b?c=d");
        assert_eq!(parse_url("https://h/").unwrap().port, 443);
        assert!(matches!(parse_url("ftp://h/"), Err(InvalidUrl { .. })));
        assert!(matches!(parse_url("/just/a/path"), Err(InvalidUrl { .. })));
        assert!(matches!(parse_url("http://"), Err(InvalidUrl { .. })));
    }

    #[test]
    fn redaction_drops_userinfo_query_and_fragment() {
        for (url, shown) in [
            (
                "http://admin:hunter2@svc:8080/deregister?token=realkey#x",
                "http://svc:8080/deregister",
            ),
            ("https://u@[::1]/a/b", "https://[::1]/a/b"),
            ("http://h", "http://h"),
            ("http://${AUTH}@${HOST}/x?t=${T}", "http://${HOST}/x"),
            ("${URL}", "${URL}"),
            ("http://a@b@c/p@q", "http://c/p@q"),
            ("u:p@host/x", "host/x"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let err = parse_url("http://admin:hunter2@[::1/x?token=realkey")
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("hunter2") && !err.contains("realkey"),
            "{err}"
        );
    }

    /// A password with a raw `/`, `?` or `#` (a base64 secret from
    /// `${VAR}`, not percent-encoded) ends the authority early as a URL
    /// parser reads it: the rest of the userinfo lands in the path, and the
    /// URL would go to the user name's host on port 80. Such a URL is
    /// refused at load, and its error text shows no piece of the secret.
    #[test]
    fn a_raw_slash_or_question_mark_in_a_password_is_refused_unshown() {
        for url in [
            "http://svc:s3cr/etpart==@consul:8500/v1/agent/check/pass/x",
            "http://svc:s3cr?etpart@consul:8500/x",
            "http://svc:s3cr#etpart@consul:8500/x",
            "http://token/s3cretpart@consul:8500/x",
        ] {
            let shown = redact_url(url);
            assert!(
                !shown.contains("s3cr") && !shown.contains("etpart"),
                "{url} shown as {shown}"
            );
            if !url.starts_with("http://token/") {
                let err = parse_url(url).map(|_| ()).unwrap_err().to_string();
                assert!(
                    !err.contains("s3cr") && !err.contains("etpart"),
                    "{url}: {err}"
                );
            }
        }
        // A port that is no number never silently becomes 80.
        assert!(matches!(
            parse_url("http://h:8o8o/x"),
            Err(InvalidUrl { .. })
        ));
        assert!(matches!(
            parse_url("http://h:65536/x"),
            Err(InvalidUrl { .. })
        ));
        assert_eq!(
            parse_url("http://h:/x").unwrap().port,
            80,
            "empty port, as curl"
        );
        assert_eq!(parse_url("http://[::1]:81/x").unwrap().port, 81);
        // What stays readable: the written text's placeholders, an `@` in
        // a query.
        assert_eq!(
            redact_url("http://${HOST}:${PORT}/x?mail=a@b"),
            "http://${HOST}:${PORT}/x"
        );
        // What is elided shows as such; no '@' is left to read as userinfo.
        assert_eq!(
            redact_url("http://t/x@consul:8500/p?q"),
            "http://…consul:8500/p"
        );
    }
}
