# One multi-stage image per service:
#   docker build --build-arg SERVICE=ticket-service -t ghcr.io/helpdesk/ticket-service:0.1.0 .
# SERVICE is a binary of this workspace: user-service, ticket-service, notification-service,
# audit-service, admin-service, or helpdesk (the all-in-one command).
FROM rust:1.95-bookworm AS build
ARG SERVICE
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ${SERVICE} && cp target/release/${SERVICE} /service

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /service /usr/local/bin/service
# Runs under any UID (OpenShift's random UIDs included); nothing is written to the image.
USER 65532:65532
EXPOSE 8080
ENV BIND_ADDR=0.0.0.0:8080
ENTRYPOINT ["/usr/local/bin/service"]
CMD ["serve"]
