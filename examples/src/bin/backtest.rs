//! A trading-strategy backtest instrumented with Vigil: one span per strategy, structured logs, and the results
//! as metrics with [`vigil::ml::record_backtest`].
//!
//! ```sh
//! cargo run --release -p vigil-collector &
//! cargo run -p vigil-examples --bin backtest
//! ```
//!
//! Metrics (per `strategy`): `backtest.duration` (seconds), `backtests`, `backtest.trades`, `backtest.pnl`,
//! `backtest.sharpe` and `backtest.max_drawdown`. Set `STRATEGIES` (comma-separated) to choose the strategies.

use std::time::Instant;

use tracing::{info, info_span};

/// A deterministic price walk, so runs are reproducible.
fn prices(seed: u64, days: usize) -> Vec<f64> {
    let mut state = seed | 1;
    let mut price = 100.0;
    (0..days)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            price *= 1.0 + ((state % 2001) as f64 - 1000.0) / 50_000.0;
            price
        })
        .collect()
}

/// Buys when the short moving average crosses above the long one, sells on the way down.
fn backtest(prices: &[f64], short: usize, long: usize) -> (u64, f64, Vec<f64>) {
    let average = |end: usize, n: usize| prices[end + 1 - n..=end].iter().sum::<f64>() / n as f64;
    let (mut trades, mut position, mut entry, mut pnl) = (0u64, false, 0.0, 0.0);
    let mut returns = Vec::new();
    for (day, &price) in prices.iter().enumerate().skip(long) {
        let (fast, slow) = (average(day, short), average(day, long));
        if !position && fast > slow {
            position = true;
            entry = price;
            trades += 1;
        } else if position && fast < slow {
            position = false;
            let gain = price - entry;
            pnl += gain;
            returns.push(gain / entry);
            trades += 1;
        }
    }
    (trades, pnl, returns)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _guard = vigil::Builder::new("backtest")
        .service_version(env!("CARGO_PKG_VERSION"))
        .try_init()?;
    let strategies = std::env::var("STRATEGIES").unwrap_or_else(|_| "sma_5_20,sma_10_50".into());
    let prices = prices(42, 750);
    for strategy in strategies
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let span = info_span!("backtest", strategy);
        let _entered = span.enter();
        let mut windows = strategy.trim_start_matches("sma_").split('_');
        let short: usize = windows.next().and_then(|w| w.parse().ok()).unwrap_or(5);
        let long: usize = windows.next().and_then(|w| w.parse().ok()).unwrap_or(20);
        let started = Instant::now();
        let (trades, pnl, returns) = backtest(&prices, short, long.max(short + 1));
        let mean = returns.iter().sum::<f64>() / returns.len().max(1) as f64;
        let spread = (returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>()
            / returns.len().max(1) as f64)
            .sqrt();
        let sharpe = if spread > 0.0 { mean / spread } else { 0.0 };
        let max_drawdown = returns.iter().copied().fold(0.0f64, f64::min);
        vigil::ml::record_backtest(
            strategy,
            started.elapsed(),
            trades,
            pnl,
            &[("sharpe", sharpe), ("max_drawdown", max_drawdown)],
        );
        info!(trades, pnl, sharpe, "Backtest finished");
    }
    Ok(())
}
