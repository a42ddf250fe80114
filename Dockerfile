# syntax=docker/dockerfile:1
# The operator image: both binaries of the operator pod, `admission` and `reconciler`
# (deploy/operator/deployment.yaml sets each container's command).
# No container engine runs on the project's development machines; this is for users' CI:
#   docker build -t db-operator:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Only what the build needs (not .local/ state or a target/ dir): the workspace manifest, the
# lockfile and every member crate (cargo loads all members, testkit included).
COPY Cargo.toml Cargo.lock ./
COPY api api
COPY admission admission
COPY certs certs
COPY opkit opkit
COPY reconciler reconciler
COPY testkit testkit
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p admission -p reconciler \
 && install -D -m 0755 target/release/admission /out/admission \
 && install -D -m 0755 target/release/reconciler /out/reconciler

# glibc + libgcc, no shell, uid 65532 (the Deployment's runAsUser).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/admission /usr/local/bin/admission
COPY --from=build /out/reconciler /usr/local/bin/reconciler
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/admission"]
