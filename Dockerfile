# syntax=docker/dockerfile:1
# The kubetrail image:  docker build -t kubetrail:0.1.0 .
#
# Stage 1 builds the release binary in the official Rust image: target/release/kubetrail, what
# `cargo build --release --locked -p kubetrail --bin kubetrail` makes, with the workspace's
# .cargo/config.toml (jemalloc and SQLite build settings). The shipped copy has its debug
# information (profile.release debug = 1, for profiling) stripped.
# Stage 2 is a minimal runtime: distroless "cc" (glibc and libgcc, CA certificates; no shell,
# no package manager) running as the non-root user and group 65532 that the manifests under
# deploy/ expect (runAsUser, runAsGroup, fsGroup), reading /etc/kubetrail/kubetrail.yaml and
# keeping its state in /var/lib/kubetrail (both mounted by the manifests).
ARG RUST_VERSION=1.89

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kubetrail --bin kubetrail \
 && objcopy --strip-debug target/release/kubetrail /kubetrail

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /kubetrail /usr/local/bin/kubetrail
USER 65532:65532
# /metrics, /healthz, /readyz (service.http_listen) and the audit webhook (audit_webhook.listen).
EXPOSE 2020 9443
ENTRYPOINT ["/usr/local/bin/kubetrail"]
CMD ["run", "-c", "/etc/kubetrail/kubetrail.yaml"]
