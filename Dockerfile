# One image per service, as the operator expects: <registry>/<service>-service:<version>.
# Build from the repository root:
#   docker build --build-arg SERVICE=ticket \
#     -t ghcr.io/helpdesk/ticket-service:0.1.0 .
# The operator runs the same image with `migrate` as argument for the migration Job, and without
# arguments (serve on BIND_ADDR) for the Deployment.
ARG SERVICE=user

FROM rust:1.95-bookworm AS build
ARG SERVICE
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p "${SERVICE}-service" --bin "${SERVICE}-service" \
 && install -D -s "target/release/${SERVICE}-service" /out/service

FROM gcr.io/distroless/cc-debian12:nonroot
ARG SERVICE
LABEL org.opencontainers.image.title="${SERVICE}-service"
COPY --from=build /out/service /usr/local/bin/service
USER 65532:65532
ENV BIND_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/service"]
