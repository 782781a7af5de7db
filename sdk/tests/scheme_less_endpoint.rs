//! `OTEL_EXPORTER_OTLP_ENDPOINT=127.0.0.1:4317`, as people write it, works: it used to become `https://` and
//! fail with advice to enable a feature of a dependency the user cannot reach.
//!
//! One test per file: it sets process environment variables.

#[test]
fn an_endpoint_written_without_a_scheme_builds_for_every_protocol() {
    for protocol in ["grpc", "http/protobuf", "http/json"] {
        // SAFETY: this test binary has one test, so no other thread reads the environment meanwhile.
        unsafe {
            std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:9");
            std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", protocol);
        }
        let built = vigil::Builder::new("scheme-less")
            .console(false)
            .without_system_metrics()
            .shutdown_timeout(std::time::Duration::from_millis(100))
            .build();
        assert!(built.is_ok(), "{protocol}: {:?}", built.err());
    }
}
