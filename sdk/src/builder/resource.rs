//! The resource every signal of this process carries.

/// The resource every signal of this process carries: `service.name` (code, or `OTEL_SERVICE_NAME`, or a
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`), `service.version` when given, `service.instance.id` (one per
/// process: the collector's Prometheus exporter makes it the `instance` label), `host.name`, `process.pid`, the
/// SDK's `telemetry.sdk.*`, and every attribute of `OTEL_RESOURCE_ATTRIBUTES`, which win over the ones found here.
pub(crate) fn process_resource(
    service_name: &str,
    version: Option<&str>,
) -> opentelemetry_sdk::Resource {
    use opentelemetry::KeyValue;
    use opentelemetry_sdk::resource::{
        EnvResourceDetector, SdkProvidedResourceDetector, TelemetryResourceDetector,
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()));
    let pid = std::process::id();
    let mut found = vec![
        KeyValue::new("service.instance.id", instance_id(pid, host.as_deref())),
        KeyValue::new("process.pid", i64::from(pid)),
    ];
    if let Some(host) = host {
        found.push(KeyValue::new("host.name", host));
    }
    if let Some(version) = version {
        found.push(KeyValue::new("service.version", version.to_string()));
    }
    let builder = opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(found)
        .with_detectors(&[
            Box::new(SdkProvidedResourceDetector),
            Box::new(TelemetryResourceDetector),
            Box::new(EnvResourceDetector::new()),
        ]);
    let named_by_attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attributes| {
        attributes
            .split(',')
            .any(|kv| kv.trim().starts_with("service.name="))
    });
    if std::env::var("OTEL_SERVICE_NAME").is_ok() || !named_by_attributes {
        builder.with_service_name(service_name.to_string()).build()
    } else {
        builder.build()
    }
}

/// A UUID-shaped id for this process, different for every start: a hash of its pid, host and start time.
fn instance_id(pid: u32, host: Option<&str>) -> String {
    use sha2::Digest as _;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut hasher = sha2::Sha256::new();
    hasher.update(pid.to_le_bytes());
    hasher.update(host.unwrap_or_default().as_bytes());
    hasher.update(started.to_le_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // Version 4 and variant bits, so tools that parse it as a UUID accept it.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
