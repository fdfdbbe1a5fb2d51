//! What a step does: the [`Action`] enum and the tables of the actions
//! that take more than one value (SPEC section 6). The keys common to
//! every step, and how a table becomes one [`Step`](super::Step), are
//! `config::steps`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::opt_string;
use crate::config::expand::{escape_map, escape_opt, escape_string, expand_map, expand_string};
use crate::config::Duration;
use crate::init::signals::Signal;
use crate::lifecycle::quiet::WaitQuiet;

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
