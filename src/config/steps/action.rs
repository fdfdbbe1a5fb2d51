//! What a step does: the [`Action`] enum and the tables of the actions
//! that take more than one value (SPEC section 6). The keys common to
//! every step, and how a table becomes one [`Step`](super::Step), are
//! `config::steps`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration as StdDuration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use super::opt_string;
use crate::config::expand::{escape_map, escape_opt, escape_string, expand_map, expand_string};
use crate::config::Duration;
use crate::config::Signal;

/// A step's one action (SPEC section 6).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Sleep(Duration),
    Http(HttpAction),
    Exec(Vec<String>),
    Signal(Signal),
    WaitTcp(String),
    WaitHttp(WaitHttp),
    WaitConnections(WaitConnections),
    WaitQuiet(WaitQuiet),
}

/// `http = { url, method, headers, body, expect }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpAction {
    #[serde(deserialize_with = "expand_string", serialize_with = "escape_string")]
    pub url: String,
    #[serde(
        default = "get",
        deserialize_with = "expand_string",
        serialize_with = "escape_string"
    )]
    pub method: String,
    #[serde(
        default,
        deserialize_with = "expand_map",
        serialize_with = "escape_map"
    )]
    pub headers: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "opt_string",
        serialize_with = "escape_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub body: Option<String>,
    /// Accepted statuses; empty means any 2xx.
    #[serde(default)]
    pub expect: Vec<u16>,
}

/// `wait_http = { url, expect }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WaitHttp {
    #[serde(deserialize_with = "expand_string", serialize_with = "escape_string")]
    pub url: String,
    /// Accepted statuses; empty means any 2xx.
    #[serde(default)]
    pub expect: Vec<u16>,
}

/// `wait_connections = { port, max }`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WaitConnections {
    pub port: u16,
    #[serde(default)]
    pub max: u32,
}

pub(super) fn get() -> String {
    "GET".to_string()
}

/// `wait_quiet = { port, quiet, min, ignore }`: the settings of the step
/// that `lifecycle::quiet` runs.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WaitQuiet {
    /// The app's local port (IPv4 and IPv6).
    pub port: u16,
    /// How long the port must be quiet in a row.
    #[serde(default = "default_quiet")]
    pub quiet: Duration,
    /// The step never ends before this, counted from its start: room for a
    /// balancer to notice the pod is unready before its silence can count.
    #[serde(default = "zero")]
    pub min: Duration,
    /// Peers whose connections do not count, as addresses or CIDRs (a
    /// balancer's health checks sent to the app's port).
    #[serde(default, deserialize_with = "peers")]
    pub ignore: Vec<IpNet>,
}

fn default_quiet() -> Duration {
    Duration::secs(1)
}

fn zero() -> Duration {
    Duration::secs(0)
}

/// `"10.0.0.0/8"`, `"10.1.2.3"` (one address), `"fd00::/8"`, `"::1"`.
fn peers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|t| {
            let t = t.trim();
            t.parse::<IpNet>()
                .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "invalid ignore entry {t:?}: expected an address or CIDR, like \"10.0.0.0/8\", \"10.1.2.3\" or \"fd00::/8\""
                    ))
                })
        })
        .collect()
}

impl WaitQuiet {
    /// Rules serde cannot express, given the step's effective timeout.
    pub fn validate(&self, timeout: Option<StdDuration>) -> Vec<String> {
        let mut problems = Vec::new();
        if self.quiet.0.is_zero() {
            problems.push(
                "wait_quiet.quiet must be more than 0: expected a duration like \"1s\"".to_string(),
            );
        }
        if let Some(t) = timeout {
            for (key, d) in [("quiet", self.quiet), ("min", self.min)] {
                if d.0 >= t {
                    problems.push(format!(
                        "wait_quiet.{key} = \"{d}\" is not shorter than the step's timeout (\"{}\"): the step could never succeed; raise `timeout`",
                        Duration(t)
                    ));
                }
            }
        }
        problems
    }

    /// Whether connections from `peer` are ignored. An IPv4 peer of a
    /// dual-stack listener (`::ffff:10.1.2.3`) matches IPv4 entries.
    pub fn ignores(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.ignore.iter().any(|net| net.contains(&peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(quiet_ms: u64, min_ms: u64) -> WaitQuiet {
        WaitQuiet {
            port: 8080,
            quiet: Duration(StdDuration::from_millis(quiet_ms)),
            min: Duration(StdDuration::from_millis(min_ms)),
            ignore: Vec::new(),
        }
    }

    #[test]
    fn config_ignore_and_validation() {
        let w: WaitQuiet =
            toml::from_str("port = 8080\nignore = [\"10.0.0.0/8\", \"192.168.1.7\", \"fd00::/8\"]")
                .unwrap();
        assert_eq!((w.quiet, w.min), (Duration::secs(1), Duration::secs(0)));
        assert!(w.ignores("10.1.2.3".parse().unwrap()));
        assert!(w.ignores("::ffff:10.1.2.3".parse().unwrap()));
        assert!(w.ignores("192.168.1.7".parse().unwrap()));
        assert!(!w.ignores("192.168.1.8".parse().unwrap()));
        assert!(w.ignores("fd00::5".parse().unwrap()));
        assert!(!w.ignores("127.0.0.1".parse().unwrap()));
        let e = toml::from_str::<WaitQuiet>("port = 8080\nignore = [\"10.0.0.300\"]").unwrap_err();
        assert!(
            e.to_string()
                .contains("invalid ignore entry \"10.0.0.300\""),
            "{e}"
        );
        assert!(toml::from_str::<WaitQuiet>("port = 8080\nquite = \"1s\"").is_err());

        assert!(w.validate(Some(StdDuration::from_secs(10))).is_empty());
        let p = cfg(0, 0).validate(None);
        assert_eq!(p.len(), 1, "{p:?}");
        let p = cfg(10_000, 12_000).validate(Some(StdDuration::from_secs(10)));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with(
                "wait_quiet.quiet = \"10s\" is not shorter than the step's timeout (\"10s\")"
            ),
            "{p:?}"
        );
    }
}
