//! A failed `build` returns its real error in every runtime context a program may call it from: plain `main`,
//! `#[tokio::main]` (multi-thread) and `#[tokio::main(flavor = "current_thread")]`. It used to panic under
//! Tokio with "Cannot drop a runtime in a context where blocking is not allowed", hiding the error.
//!
//! One test per file: it sets process environment variables.

fn failing_build() -> String {
    match vigil::Builder::new("init-errors").build() {
        Ok(_) => panic!("the sampler variable is invalid; build must fail"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn a_failed_build_returns_its_error_in_sync_main_and_inside_tokio_runtimes() {
    // SAFETY: this test binary has one test, so no other thread reads the environment meanwhile.
    unsafe {
        std::env::set_var("OTEL_TRACES_SAMPLER", "sometimes");
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9");
    }
    let sync = failing_build();
    assert!(sync.contains("OTEL_TRACES_SAMPLER"), "{sync}");

    let multi = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { failing_build() });
    assert_eq!(multi, sync);

    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { failing_build() });
    assert_eq!(current, sync);
}
