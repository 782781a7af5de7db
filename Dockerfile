# vigil-collector image: `docker build -t vigil-collector .`
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p vigil-collector

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 vigil && mkdir -p /var/lib/vigil && chown vigil /var/lib/vigil
COPY --from=build /src/target/release/vigil-collector /usr/local/bin/vigil-collector
USER vigil
EXPOSE 4317 4318 8888 9464 13133
ENTRYPOINT ["vigil-collector"]
