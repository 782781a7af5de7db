//! The README's first SDK snippet as a program: one call sets up console logs, OTLP export of spans, logs and
//! metrics, and masking; one event inside one span.
//!
//! ```sh
//! cargo run --release -p vigil-collector &
//! cargo run -p vigil-examples --bin quickstart
//! ```
//!
//! With no collector listening (or the wrong protocol for its port), the program says so on stderr, once, with
//! the likely fix, and again at exit with what did not reach it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _guard = vigil::init("quickstart")?;
    let request = tracing::info_span!("handle_request", request_id = "r-42");
    let _entered = request.enter();
    tracing::info!(
        model_type = "lightgbm",
        duration_sec = 125.5,
        gpu_used = true,
        "Training completed"
    );
    Ok(())
}
