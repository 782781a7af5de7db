//! Extensions: components outside the data path. Only `health_check` exists today.

pub mod health_check;

use serde_json::Value;

use crate::component::{Checker, ComponentId};

/// An extension's configuration, by type.
#[derive(Clone, Debug)]
pub enum ExtensionConfig {
    /// `health_check`: `/healthz` and `/readyz` for orchestrators.
    HealthCheck(health_check::HealthCheckConfig),
}

impl ExtensionConfig {
    /// The factory: decodes the section of an extension of type `kind`.
    pub fn decode(check: &mut Checker<'_>, path: &str, kind: &str, value: &Value) -> Option<Self> {
        match kind {
            "health_check" => check.decode(path, value).map(ExtensionConfig::HealthCheck),
            other => {
                check.error(
                    path,
                    format!("unknown extension type `{other}`; known types: health_check"),
                );
                None
            }
        }
    }

    /// `(config path, host:port)` of each socket this extension will listen on.
    pub fn listen_endpoints(&self, path: &str) -> Vec<(String, String)> {
        match self {
            ExtensionConfig::HealthCheck(c) => {
                vec![(format!("{path}.endpoint"), c.endpoint.clone())]
            }
        }
    }

    /// A readable id for logs.
    pub fn describe(&self, id: &ComponentId) -> String {
        format!("extension {id}")
    }
}
