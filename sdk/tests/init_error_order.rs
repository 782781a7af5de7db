//! When several `OTEL_*` variables are wrong, the exporter's is the one reported (the order users have relied on
//! since exporters came first in the SDK's setup), and it names the variable.
//!
//! One test per file: it sets process environment variables.

#[test]
fn a_bad_exporter_setting_is_reported_before_a_bad_sampler() {
    // SAFETY: this test binary has one test, so no other thread reads the environment meanwhile.
    unsafe {
        std::env::set_var("OTEL_TRACES_SAMPLER", "sometimes");
        std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon");
    }
    let error = match vigil::Builder::new("init-error-order").build() {
        Ok(_) => panic!("both variables are invalid; build must fail"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{error}");
    assert!(error.contains("carrier-pigeon"), "{error}");
}
