# syntax=docker/dockerfile:1
# sessionwatch's image: a static binary on an empty base. No shell, no package manager, nothing
# to patch but the binary; it runs as a non-root user with a read-only root filesystem (it writes
# nothing: keep `[alerts] log_file = ""` and `stdout = true`, as deploy/kubernetes/ does).
#
#   docker build --build-arg SESSIONWATCH_COMMIT="$(git rev-parse --short=12 HEAD)" \
#     -t sessionwatch:0.1.0 .
#
# The final stage is also what scripts/check-image builds and runs, fed a binary built on the
# host (no base image can be pulled there): change it in one place, this file.

FROM rust:1.95-slim-bookworm AS build
# The commit `sessionwatch --version` names: the build context has no git history.
ARG SESSIONWATCH_COMMIT=unknown
WORKDIR /src
COPY . .
# crt-static on the gnu target links glibc statically: a dynamically linked binary does not start
# on an empty base. Name resolution still works without NSS modules or /etc/nsswitch.conf, since
# glibc 2.34 and later carry the `files` and `dns` lookups in libc itself (checked by
# scripts/check-image with a backend given by host name). The release profile's line tables
# are dropped from the image's copy (72 MiB -> about a fifth); its symbols stay, for backtraces.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS="-C target-feature=+crt-static" SESSIONWATCH_COMMIT="$SESSIONWATCH_COMMIT" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu -p sessionwatch \
    && strip --strip-debug -o /sessionwatch target/x86_64-unknown-linux-gnu/release/sessionwatch

FROM scratch
# Roots for rediss:// without a ca_file, and for TLS to backends and alert sinks.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /sessionwatch /usr/local/bin/sessionwatch
# A numeric user needs no /etc/passwd; 65532 is the conventional "nonroot" of distroless images.
USER 65532:65532
# Traffic, and the admin endpoints (/metrics, /healthz, /readyz, /status).
EXPOSE 8080 9090
# Exec form: the binary is PID 1 and gets SIGTERM itself, so the drain runs.
ENTRYPOINT ["/usr/local/bin/sessionwatch", "serve", "--config", "/etc/sessionwatch/sessionwatch.toml"]
# JSON log lines, so that `kubectl logs` output is all JSON (alert lines on stdout, log lines on
# stderr). Arguments given to the container replace this.
CMD ["--log-format", "json"]
