# syntax=docker/dockerfile:1
# `ifmatch serve` for ECS or Kubernetes: built with the Rust toolchain, run on
# distroless (glibc, no shell, no package manager) as the non-root user.
#
#   docker build -t ifmatch .
#   docker run -p 8080:8080 -e IFMATCH_API_KEY=... -e IFMATCH_STORE=s3://BUCKET/PREFIX \
#       -e AWS_REGION=eu-west-1 ifmatch
#
# The server stops on SIGTERM after answering the requests in flight, so a
# rolling deploy drops nothing. docs/DEPLOY.md has the ECS and Kubernetes notes.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ifmatch-cli --bin ifmatch \
 && install -D target/release/ifmatch /out/ifmatch

# A static wget for the HEALTHCHECK (distroless has neither a shell nor curl).
FROM busybox:1.37-uclibc AS probe

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ifmatch /usr/local/bin/ifmatch
COPY --from=probe /bin/wget /usr/local/bin/wget
WORKDIR /home/nonroot
# distroless's nonroot user, by number so that Kubernetes runAsNonRoot can check it.
USER 65532:65532
ENV RUST_LOG=info
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ifmatch"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
