# syntax=docker/dockerfile:1.7
# Herald's one image: every service binary, picked by the command (`herald <service> [args]`, see docker/herald).
#
#   docker build -t herald:local .
#   docker run --rm herald:local dispatch --lane critical
#
# Stages: `chef` (the toolchain and cargo-chef), `planner` (the dependency recipe: Cargo.toml files and
# Cargo.lock only), `builder` (dependencies first, in their own layer, then Herald), `runtime` (debian-slim).
# A change to Herald's code rebuilds only the last `cargo build`; the dependency layer is reused until
# Cargo.lock or a manifest changes.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
# Build dependencies: rdkafka's bundled librdkafka is built with its own configure and make against OpenSSL (the
# `ssl` feature, linked dynamically) and zlib; no SASL/GSSAPI, zstd or curl features are enabled, so neither
# libsasl2 nor cmake is needed. The rust image has most of this already; listing it keeps the build honest.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev python3 \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /build

FROM chef AS planner
# The services to build, by crate directory: one whose crate is not in this checkout (yet) is skipped.
ARG HERALD_SERVICES="ingest dispatch retry replay query alert"
COPY . .
RUN cargo chef prepare --recipe-path recipe.json \
    && for s in ${HERALD_SERVICES}; do \
         if [ -f "crates/$s/Cargo.toml" ]; then printf -- '--package herald-%s ' "$s"; fi; \
       done > packages.args \
    && echo "building: $(cat packages.args)"

FROM chef AS builder
COPY --from=planner /build/recipe.json /build/packages.args ./
# The dependencies of exactly the packages built below (same packages, same profile, so the same features).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json $(cat packages.args) --bins
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked $(cat packages.args) --bins \
    && mkdir -p /out \
    && find target/release -maxdepth 1 -type f -executable -name 'herald-*' -exec install -m 0755 {} /out/ \; \
    && ls -l /out

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: TLS to Kafka (librdkafka uses OpenSSL's CA store) and to SMTP/SMS/webhooks; libssl3: the
# OpenSSL librdkafka links; zlib1g is part of every Debian base.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid herald --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin herald
COPY --from=builder /out/ /usr/local/bin/
COPY --chmod=0755 docker/herald /usr/local/bin/herald
# Containers listen on every interface; the services' own default is loopback.
ENV HERALD_INGEST_HOST=0.0.0.0 \
    HERALD_QUERY_HOST=0.0.0.0 \
    HERALD_REPLAY_HOST=0.0.0.0 \
    HERALD_DISPATCH_HOST=0.0.0.0 \
    HERALD_RETRY_HOST=0.0.0.0 \
    HERALD_ALERT_HOST=0.0.0.0 \
    HERALD_LOG_FORMAT=json
# Numeric, so Kubernetes can verify runAsNonRoot.
USER 10001:10001
EXPOSE 3000 3001 3005 3010 3011 3012 3013 3020 3030
ENTRYPOINT ["herald"]
CMD ["help"]
