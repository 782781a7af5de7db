//! `vigil-loadgen`: an OTLP load generator, in the spirit of the OpenTelemetry Collector's `telemetrygen`.
//!
//! It pre-encodes one export request (traces, metrics or logs; items per request and attributes per item are
//! configurable), then sends it over OTLP/gRPC or OTLP/HTTP (HTTP/2) from many connections and streams, at full
//! speed or at a fixed rate, and reports items/s, outcomes and latency percentiles. Encoding is done once, so
//! the generator spends its CPU on the transport, not on building messages.
//!
//! ```text
//! vigil-loadgen --protocol grpc --endpoint 127.0.0.1:4317 --items 100 --attributes 10 \
//!               --connections 8 --streams 32 --duration 20s
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use vigil_proto::grpc_codec::RawCodec;
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vigil_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
use vigil_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vigil_proto::otlp::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies over HTTP/2 (prior knowledge, like h2load).
    Http,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SignalArg {
    Traces,
    Metrics,
    Logs,
}

/// OTLP load generator.
#[derive(Parser, Debug)]
#[command(name = "vigil-loadgen", version, about)]
struct Args {
    /// Transport.
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,
    /// `host:port` of the receiver (defaults: 127.0.0.1:4317 for grpc, 127.0.0.1:4318 for http).
    #[arg(long)]
    endpoint: Option<String>,
    /// Signal to send.
    #[arg(long, value_enum, default_value = "traces")]
    signal: SignalArg,
    /// Items (spans, data points, log records) per request.
    #[arg(long, default_value_t = 100)]
    items: u32,
    /// String attributes per item.
    #[arg(long, default_value_t = 10)]
    attributes: u32,
    /// TCP connections.
    #[arg(long, default_value_t = 8)]
    connections: u32,
    /// Concurrent requests per connection.
    #[arg(long, default_value_t = 32)]
    streams: u32,
    /// Target items per second over all connections; 0 sends as fast as the receiver answers.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = humantime_duration)]
    duration: Duration,
    /// Load sent before measuring starts (not counted).
    #[arg(long, default_value = "2s", value_parser = humantime_duration)]
    warmup: Duration,
    /// Tokio worker threads (default: all cores the process may use).
    #[arg(long)]
    threads: Option<usize>,
    /// Write the encoded request to this file and exit (the body for `h2load -d`).
    #[arg(long)]
    write_request: Option<std::path::PathBuf>,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len()),
    );
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 10s or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn attributes(count: u32, seed: u32) -> Vec<KeyValue> {
    (0..count)
        .map(|a| KeyValue {
            key: format!("attribute.key.{a}"),
            value: Some(AnyValue {
                value: Some(Value::StringValue(format!("value-{seed}-{a}-abcdefgh"))),
            }),
            ..Default::default()
        })
        .collect()
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue("vigil-loadgen".into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "vigil-loadgen".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    })
}

/// One encoded export request.
fn build_request(signal: Signal, items: u32, attribute_count: u32) -> Bytes {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let bytes = match signal {
        Signal::Traces => ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(),
                scope_spans: vec![ScopeSpans {
                    scope: scope(),
                    spans: (0..items)
                        .map(|i| Span {
                            trace_id: [[7u8; 12].as_slice(), &i.to_be_bytes()].concat(),
                            span_id: [[9u8; 4].as_slice(), &i.to_be_bytes()].concat(),
                            name: format!("GET /api/v1/items/{i}"),
                            kind: 2,
                            start_time_unix_nano: now,
                            end_time_unix_nano: now + 1_500_000,
                            attributes: attributes(attribute_count, i),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec(),
        Signal::Metrics => ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(),
                scope_metrics: vec![ScopeMetrics {
                    scope: scope(),
                    metrics: vec![Metric {
                        name: "loadgen.gauge".into(),
                        unit: "1".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: (0..items)
                                .map(|i| NumberDataPoint {
                                    attributes: attributes(attribute_count, i),
                                    time_unix_nano: now,
                                    value: Some(number_data_point::Value::AsDouble(f64::from(i))),
                                    ..Default::default()
                                })
                                .collect(),
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec(),
        Signal::Logs => ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource(),
                scope_logs: vec![ScopeLogs {
                    scope: scope(),
                    log_records: (0..items)
                        .map(|i| LogRecord {
                            time_unix_nano: now,
                            severity_number: 9,
                            severity_text: "INFO".into(),
                            body: Some(AnyValue {
                                value: Some(Value::StringValue(format!(
                                    "request {i} handled in 12ms"
                                ))),
                            }),
                            attributes: attributes(attribute_count, i),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec(),
    };
    Bytes::from(bytes)
}

#[derive(Default)]
struct Outcomes {
    ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

enum Client {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
    Http(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

enum Answer {
    Ok,
    Refused,
    Failed(String),
}

impl Client {
    async fn connect(protocol: Protocol, endpoint: &str) -> Result<Client, String> {
        match protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
                    .map_err(|e| e.to_string())?
                    .tcp_nodelay(true)
                    .initial_stream_window_size(1 << 20)
                    .initial_connection_window_size(8 << 20)
                    .connect()
                    .await
                    .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
                Ok(Client::Grpc(tonic::client::Grpc::new(channel)))
            }
            Protocol::Http => {
                let stream = tokio::net::TcpStream::connect(endpoint)
                    .await
                    .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
                let _ = stream.set_nodelay(true);
                let (sender, connection) =
                    hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                        .initial_stream_window_size(1 << 20)
                        .initial_connection_window_size(8 << 20)
                        .handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| format!("HTTP/2 handshake with {endpoint} failed: {e}"))?;
                tokio::spawn(connection);
                Ok(Client::Http(sender))
            }
        }
    }

    async fn send(&mut self, signal: Signal, endpoint: &str, body: &Bytes) -> Answer {
        match self {
            Client::Grpc(grpc) => {
                if let Err(e) = grpc.ready().await {
                    return Answer::Failed(e.to_string());
                }
                let path = http::uri::PathAndQuery::from_static(signal.grpc_path());
                match grpc
                    .unary::<Vec<Bytes>, Bytes, RawCodec>(
                        tonic::Request::new(vec![body.clone()]),
                        path,
                        RawCodec,
                    )
                    .await
                {
                    Ok(_) => Answer::Ok,
                    Err(s)
                        if matches!(
                            s.code(),
                            tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                        ) =>
                    {
                        Answer::Refused
                    }
                    Err(s) => Answer::Failed(format!("{:?}: {}", s.code(), s.message())),
                }
            }
            Client::Http(sender) => {
                if let Err(e) = sender.ready().await {
                    return Answer::Failed(e.to_string());
                }
                let request =
                    http::Request::post(format!("http://{endpoint}/v1/{}", signal.as_str()))
                        .header("content-type", "application/x-protobuf")
                        .body(Full::new(body.clone()));
                let Ok(request) = request else {
                    return Answer::Failed("bad request".into());
                };
                match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let _ = response.into_body().collect().await;
                        match status.as_u16() {
                            200..=299 => Answer::Ok,
                            429 | 503 => Answer::Refused,
                            other => Answer::Failed(format!("HTTP {other}")),
                        }
                    }
                    Err(e) => Answer::Failed(e.to_string()),
                }
            }
        }
    }
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let signal = match args.signal {
        SignalArg::Traces => Signal::Traces,
        SignalArg::Metrics => Signal::Metrics,
        SignalArg::Logs => Signal::Logs,
    };
    let body = build_request(signal, args.items, args.attributes);
    if let Some(path) = &args.write_request {
        std::fs::write(path, &body).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!(
            "wrote a {}-byte {signal} request with {} items to {}",
            body.len(),
            args.items,
            path.display()
        );
        return Ok(());
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(run(args, signal, body))
}

async fn run(args: Args, signal: Signal, body: Bytes) -> Result<(), String> {
    let endpoint = args
        .endpoint
        .clone()
        .unwrap_or_else(|| match args.protocol {
            Protocol::Grpc => "127.0.0.1:4317".into(),
            Protocol::Http => "127.0.0.1:4318".into(),
        });
    let workers = args.connections * args.streams;
    // Each worker sends one request per `pace` when a rate is set.
    let pace = (args.rate > 0).then(|| {
        let requests_per_second = args.rate as f64 / f64::from(args.items.max(1));
        Duration::from_secs_f64(f64::from(workers) / requests_per_second)
    });
    let outcomes = Arc::new(Outcomes::default());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let client = Client::connect(args.protocol, &endpoint).await?;
        let client = Arc::new(tokio::sync::Mutex::new(client));
        for stream in 0..args.streams {
            let mut client = match &*client.lock().await {
                Client::Grpc(g) => Client::Grpc(g.clone()),
                Client::Http(h) => Client::Http(h.clone()),
            };
            let (body, endpoint, outcomes, measuring, stop, first_error) = (
                body.clone(),
                endpoint.clone(),
                outcomes.clone(),
                measuring.clone(),
                stop.clone(),
                first_error.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut latencies =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
                let mut ticker = pace.map(|p| {
                    let offset = p.mul_f64(f64::from(stream) / f64::from(args.streams.max(1)));
                    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, p);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    t
                });
                while !stop.load(Ordering::Relaxed) {
                    if let Some(t) = ticker.as_mut() {
                        t.tick().await;
                    }
                    let started = Instant::now();
                    let answer = client.send(signal, &endpoint, &body).await;
                    if !measuring.load(Ordering::Relaxed) {
                        continue;
                    }
                    let counter = match answer {
                        Answer::Ok => {
                            let _ = latencies.record(started.elapsed().as_micros() as u64);
                            &outcomes.ok
                        }
                        Answer::Refused => &outcomes.refused,
                        Answer::Failed(e) => {
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            &outcomes.failed
                        }
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                latencies
            }));
        }
    }
    tokio::time::sleep(args.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(args.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut latencies =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for task in tasks {
        if let Ok(h) = task.await {
            let _ = latencies.add(h);
        }
    }
    let ok = outcomes.ok.load(Ordering::Relaxed);
    let refused = outcomes.refused.load(Ordering::Relaxed);
    let failed = outcomes.failed.load(Ordering::Relaxed);
    let items_per_second = (ok * u64::from(args.items)) as f64 / elapsed;
    println!(
        "protocol={:?} signal={signal} items/request={} attributes={} connections={} streams={} duration={elapsed:.1}s",
        args.protocol, args.items, args.attributes, args.connections, args.streams
    );
    println!(
        "requests: ok={ok} refused={refused} failed={failed} ({:.0} req/s)",
        ok as f64 / elapsed
    );
    println!("items/s: {items_per_second:.0}");
    println!(
        "latency: p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        latencies.value_at_quantile(0.5) as f64 / 1000.0,
        latencies.value_at_quantile(0.9) as f64 / 1000.0,
        latencies.value_at_quantile(0.99) as f64 / 1000.0,
        latencies.max() as f64 / 1000.0
    );
    if let Some(error) = first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        println!("first failure: {error}");
    }
    Ok(())
}
