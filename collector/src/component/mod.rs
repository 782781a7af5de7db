//! What every component's config is made of, and nothing else: component ids, the error collector a
//! component's config section is checked with, durations, listen addresses and the optional-text rule.
//!
//! A leaf module: components (receivers, processors, exporters, connectors, extensions, alert notifiers) build
//! themselves from their config section with these, and never import [`crate::config`], which assembles them.
//!
//! ```
//! use vigil_collector::component::{ComponentId, parse_listen_address};
//!
//! let id = ComponentId::parse("otlp/internal").expect("a valid id");
//! assert_eq!((id.kind.as_str(), id.name.as_deref()), ("otlp", Some("internal")));
//! assert_eq!(parse_listen_address("localhost:4317").unwrap().to_string(), "127.0.0.1:4317");
//! ```

pub mod duration;

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
pub use vigil::config::yaml::{self, Location};

/// A component id: `type` or `type/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentId {
    /// The component type (`otlp`, `batch`, …).
    pub kind: String,
    /// The optional instance name after the slash.
    pub name: Option<String>,
}

impl ComponentId {
    /// Parses `type` or `type/name`, saying which half is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        let (kind, name) = match text.split_once('/') {
            Some((kind, name)) => (kind, Some(name)),
            None => (text, None),
        };
        if !valid(kind) {
            return Err(format!(
                "`{text}`: the type `{kind}` must be non-empty letters, digits, `_`, `-` or `.`"
            ));
        }
        if let Some(name) = name
            && (name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace))
        {
            return Err(format!(
                "`{text}`: the name after `/` must be non-empty, without `/` or spaces"
            ));
        }
        Ok(ComponentId {
            kind: kind.to_string(),
            name: name.map(str::to_string),
        })
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{name}", self.kind),
            None => f.write_str(&self.kind),
        }
    }
}

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is.
    pub location: Location,
    /// The dotted key path (`receivers.otlp.protocols.grpc.endpoint`).
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Every problem found in one config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file name shown in messages.
    pub source: String,
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.location.line == 0 {
                // No place in the text (an unreadable or empty file): the file name alone, or nothing when
                // the message names the file already.
                if !e.message.contains(&self.source) {
                    write!(f, "{}: ", self.source)?;
                }
            } else {
                write!(
                    f,
                    "{}:{}:{}: ",
                    self.source, e.location.line, e.location.column
                )?;
            }
            if !e.path.is_empty() {
                write!(f, "{}: ", e.path)?;
            }
            f.write_str(&e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors while checking one file.
pub struct Checker<'a> {
    locations: &'a yaml::Locations,
    errors: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    /// A checker for a file whose values were found at `locations`.
    pub fn new(locations: &'a yaml::Locations) -> Self {
        Checker {
            locations,
            errors: Vec::new(),
        }
    }

    /// The problems recorded so far, in the order they were found.
    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    /// Records a problem at `path`.
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            location: self.locations.find(path),
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Deserialises `value` (found at `path`) into `T`, recording any error with its exact location.
    /// `null` reads as an empty mapping, so `otlp:` alone means "all defaults".
    pub fn decode<T: DeserializeOwned>(&mut self, path: &str, value: &Value) -> Option<T> {
        match yaml::decode_all(value, path, self.locations) {
            Ok(typed) => Some(typed),
            Err(errors) => {
                self.errors.extend(errors.into_iter().map(|e| ConfigError {
                    location: e.location,
                    path: e.path,
                    message: e.message,
                }));
                None
            }
        }
    }
}

/// Reads an optional text where empty means unset, so `${env:NAME:-}` leaves a credential out rather than
/// sending an empty one (`#[serde(default, deserialize_with = "crate::component::empty_as_none")]`).
pub fn empty_as_none<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = Option::<String>::deserialize(deserializer)?;
    Ok(text.filter(|t| !t.is_empty()))
}

/// Parses `host:port` for a listener; `localhost` means the IPv4 loopback.
pub fn parse_listen_address(endpoint: &str) -> Result<SocketAddr, String> {
    let replaced = match endpoint.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => endpoint.to_string(),
    };
    replaced.parse().map_err(|_| {
        format!("`{endpoint}` is not a listen address; expected `host:port` such as `127.0.0.1:4317` or `0.0.0.0:4318`")
    })
}

/// Why a component could not be built or started; the message names the component and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// A listener could not bind its address (in use, or not allowed).
    #[error("{what}: cannot listen on {endpoint}: {source}")]
    Bind {
        /// The component and protocol (`receiver otlp (grpc)`).
        what: String,
        /// The configured address.
        endpoint: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The component could not be built from settings that passed validation: a certificate or key that does
    /// not load, an endpoint that is not a URI, a directory or file that cannot be opened.
    #[error("{component}: {reason}")]
    Build {
        /// The component (`exporter otlp/tempo`).
        component: String,
        /// What is wrong, in words.
        reason: String,
    },
}

impl ComponentError {
    /// A [`ComponentError::Build`] for `component`.
    pub fn build(component: impl fmt::Display, reason: impl fmt::Display) -> Self {
        ComponentError::Build {
            component: component.to_string(),
            reason: reason.to_string(),
        }
    }
}
