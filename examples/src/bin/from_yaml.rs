//! A program configured only by a logging YAML file (`dictConfig` style): handlers, formatters, levels and
//! masking all come from the file, none from code.
//!
//! ```sh
//! cargo run --release -p vigil-collector &
//! cargo run -p vigil-examples --bin from_yaml                      # configs/logging/default.yaml
//! VIGIL_LOGGING_CONFIG=my-logging.yaml cargo run -p vigil-examples --bin from_yaml
//! ```

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var("VIGIL_LOGGING_CONFIG")
        .unwrap_or_else(|_| "configs/logging/default.yaml".into());
    let _guard = vigil::init_from_file(&path)?;
    let _request = tracing::info_span!("import_batch", batch_id = "b-7").entered();
    tracing::debug!(rows = 1200, "parsed the batch");
    tracing::info!(
        user = "alice@example.com",
        rows = 1200,
        "imported the batch"
    );
    tracing::warn!(skipped = 3, "some rows were skipped");
    Ok(())
}
