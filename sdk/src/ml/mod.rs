//! What ML and backtesting teams record every day, a line or two each: training runs ([`TrainingRun`]) and
//! backtests ([`record_backtest`]) as metrics, and as MLflow runs through [`mlflow`] when MLflow is on.
//!
//! ```no_run
//! use vigil::ml::TrainingRun;
//!
//! let mut run = TrainingRun::start("exp_001", "lightgbm");
//! for epoch in 1..=3u64 {
//!     run.epoch(epoch, 50_000, &[("loss", 0.5 / epoch as f64), ("accuracy", 0.9)]);
//! }
//! run.complete();
//! ```

pub mod mlflow;
mod training;

pub use training::{TrainingRun, record_backtest};
