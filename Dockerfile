# token-handler container image (docs/deployment.md#the-docker-image).
#
#   docker build -t token-handler:0.1.0 .
#   docker run --rm token-handler:0.1.0 keygen
#   docker run --rm -p 8080:8080 \
#     -v "$PWD/config.toml:/etc/token-handler/config.toml:ro" \
#     -v "$PWD/secrets:/run/secrets/token-handler:ro" \
#     token-handler:0.1.0
#
# The configuration must set `server.listen = "0.0.0.0:8080"`: the default, 127.0.0.1:8080, is
# unreachable from outside the container.

ARG RUST_VERSION=1

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /build

# 1. Dependencies only. Cargo.toml and Cargo.lock alone decide this layer, so editing src/ does
#    not rebuild the dependencies. Placeholder sources stand in for every target the manifest
#    declares (Cargo refuses a manifest whose targets are missing, even unbuilt ones: keep this
#    list in step with the [[example]] and [[bench]] entries). The example and bench placeholders
#    stay for step 2; the placeholder crate's own artifacts are deleted, so step 2 rebuilds it
#    whatever the timestamps of the copied sources are.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src examples/demo examples/api benches \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && for f in examples/demo/main.rs examples/api/main.rs benches/seal.rs; do echo 'fn main() {}' > "$f"; done \
 && cargo build --release --locked --bin token-handler \
 && rm -rf src \
      target/release/token-handler target/release/token-handler.d \
      target/release/.fingerprint/token-handler-* \
      target/release/deps/token_handler-* target/release/deps/libtoken_handler-*

# 2. The program. rustls with ring and webpki-roots: no OpenSSL, no system CA store needed.
COPY src ./src
RUN cargo build --release --locked --bin token-handler \
 && ./target/release/token-handler --version

# ---------------------------------------------------------------------------------------------
# Same Debian release as the builder (glibc 2.36); the cc variant adds libgcc_s, which Rust's
# unwinder needs. No shell, no package manager. User 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /build/target/release/token-handler /usr/local/bin/token-handler

# Numeric, so Kubernetes' runAsNonRoot can verify it without an /etc/passwd lookup.
USER 65532:65532

# 8080: server.listen (agent endpoints, API proxy, /health/live, /health/ready).
# 9090: [metrics] listen (Prometheus /metrics), off unless configured; keep it off the Internet.
EXPOSE 8080 9090

# Log verbosity; override with -e RUST_LOG=debug. The format is [log] format in the config.
ENV RUST_LOG=info

# No HEALTHCHECK: distroless has no curl or shell. Kubernetes uses httpGet probes on
# /health/live and /health/ready (examples/kubernetes/deployment.yaml); a load balancer can
# poll /health/ready the same way.
ENTRYPOINT ["/usr/local/bin/token-handler"]
CMD ["--config", "/etc/token-handler/config.toml"]
