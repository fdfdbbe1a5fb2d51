//! Who may call the hook and drain endpoints: `http.allow` by source
//! network, then the bearer token (`http.token` or `http.token_file`),
//! compared in constant time and never logged. A token that cannot be
//! read fails closed.

use std::net::IpAddr;
use std::sync::{Arc, PoisonError};

use hyper::header::{HeaderMap, AUTHORIZATION};
use subtle::ConstantTimeEq;
use tracing::{debug, warn};

use super::routes::Refusal;
use super::server::Server;
use crate::config::Config;

/// A config version and the token it resolves to.
pub(super) type TokenCache = (Arc<Config>, Option<Arc<str>>);

impl Server {
    /// Applies `http.allow`, then the token, to an endpoint marked "auth".
    pub(super) async fn authorize(&self, headers: &HeaderMap, peer: IpAddr) -> Result<(), Refusal> {
        let config = self.config();
        let source = source_ip(peer);
        if !config.http.allow.is_empty() && !config.http.allow.iter().any(|n| n.contains(&source)) {
            debug!(%source, "http: source not in http.allow");
            return Err(Refusal::Forbidden);
        }
        let Some(token) = self.token(&config).await? else {
            return Ok(());
        };
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()));
        match given {
            Some(given) if bool::from(given.ct_eq(token.as_bytes())) => Ok(()),
            _ => {
                debug!(%source, "http: missing or wrong bearer token");
                Err(Refusal::Unauthorized)
            }
        }
    }

    /// The token in force for this config version, read once per version.
    /// A token that cannot be read (or is empty) locks the endpoints: they
    /// answer 500 until a reload fixes it, and the read is retried.
    ///
    /// `http.token_file` is read on tokio's blocking pool, never on this
    /// thread (it must be a regular file, but a stalled file system can
    /// still hang a read); only the request that needs it waits.
    async fn token(&self, config: &Arc<Config>) -> Result<Option<Arc<str>>, Refusal> {
        if let Some((version, token)) = &*self.token.lock().unwrap_or_else(PoisonError::into_inner)
        {
            if Arc::ptr_eq(version, config) {
                return Ok(token.clone());
            }
        }
        let resolved = if config.http.token.is_none() && config.http.token_file.is_some() {
            let config = Arc::clone(config);
            tokio::task::spawn_blocking(move || config.http.resolve_token())
                .await
                .unwrap_or_else(|e| Err(format!("cannot read token_file: {e}")))
        } else {
            config.http.resolve_token()
        };
        let resolved = match resolved {
            Ok(Some(token)) if token.is_empty() => Err("the token is empty".to_string()),
            other => other,
        };
        match resolved {
            Ok(token) => {
                let token: Option<Arc<str>> = token.map(Arc::from);
                let mut cache = self.token.lock().unwrap_or_else(PoisonError::into_inner);
                *cache = Some((Arc::clone(config), token.clone()));
                Ok(token)
            }
            Err(e) => {
                warn!("http: {e}; refusing the endpoints that need the token");
                Err(Refusal::NoToken)
            }
        }
    }
}

/// The peer address as `http.allow` sees it: an IPv4 client of a dual-stack
/// `[::]` listener shows up as `::ffff:a.b.c.d`, which must match
/// `10.0.0.0/8`.
fn source_ip(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The credentials of an `Authorization: Bearer <token>` header (the
/// scheme is case-insensitive, RFC 7235).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ' && *b != b'\t')?;
    let end = rest.iter().rposition(|b| *b != b' ' && *b != b'\t')?;
    Some(&rest[start..=end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_peers_count_as_ipv4() {
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(source_ip(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
        let net: ipnet::IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(&source_ip(mapped)));
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(source_ip(v6), v6);
    }

    #[test]
    fn bearer_credentials_are_parsed_strictly() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER  abc\t"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearer a b"), Some(&b"a b"[..]));
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"abc"), None);
    }
}
