# syntax=docker/dockerfile:1
# The vigil-collector image: `docker build -t vigil-collector .` (docker-compose.yml builds it as `collector`).
# The release build with cargo's registry and target directory cached between builds, then only the binary on
# a distroless base (glibc and CA certificates, no shell, no package manager), as a non-root user.
# `--target demo` builds the image of the stack's `demo` profile instead: the example programs and scripts/demo.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vigil-collector \
    && install -D target/release/vigil-collector /out/usr/local/bin/vigil-collector \
    && install -d /out/var/lib/vigil /out/etc/vigil/rules \
    && install -m 0644 configs/monitoring/alerts.yaml configs/monitoring/recording.yaml /out/etc/vigil/rules/

FROM rust:1.95-bookworm AS build-demo
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vigil-examples \
    && install -d /out \
    && install target/release/training_job target/release/backtest target/release/http_service /out/

FROM python:3.13-slim-bookworm AS demo
COPY examples/python /demo/examples/python
RUN pip install --no-cache-dir -r /demo/examples/python/requirements.txt \
    && useradd --system --uid 10001 --create-home demo
COPY --from=build-demo /out/ /usr/local/bin/
COPY scripts/demo /demo/scripts/demo
USER demo
WORKDIR /home/demo
ENTRYPOINT ["/demo/scripts/demo"]

FROM gcr.io/distroless/cc-debian12:nonroot AS collector
COPY --from=build /out/usr/local/bin/vigil-collector /usr/local/bin/vigil-collector
COPY --from=build /out/etc/vigil /etc/vigil
# State that survives restarts (alert state, file exporter output) lives here: mount a volume on it.
COPY --from=build --chown=nonroot:nonroot /out/var/lib/vigil /var/lib/vigil
USER nonroot
# The embedded default config listens on loopback; in a container it must listen on every interface.
ENV VIGIL_OTLP_GRPC_ENDPOINT=0.0.0.0:4317 \
    VIGIL_OTLP_HTTP_ENDPOINT=0.0.0.0:4318 \
    VIGIL_PROMETHEUS_ENDPOINT=0.0.0.0:9464 \
    VIGIL_METRICS_ADDRESS=0.0.0.0:8888 \
    VIGIL_HEALTH_ENDPOINT=0.0.0.0:13133
# OTLP gRPC and HTTP, self-metrics, the prometheus exporter, health.
EXPOSE 4317 4318 8888 9464 13133
# `health` asks the health_check extension's /readyz on 127.0.0.1:13133 (every config of the stack has one).
HEALTHCHECK --interval=10s --timeout=6s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/vigil-collector", "health"]
ENTRYPOINT ["/usr/local/bin/vigil-collector"]
