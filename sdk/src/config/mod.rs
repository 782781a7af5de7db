//! Configuration from files: the YAML loader shared with the collector ([`yaml`]) and the logging config in the
//! spirit of Python's `dictConfig` ([`logging`]).

pub mod logging;
pub mod yaml;
