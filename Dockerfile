# syntax=docker/dockerfile:1
#
# gqlbridge image: a static, stripped binary on distroless (no shell, no
# package manager), running as the non-root user 65532.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#     -t ghcr.io/gqlbridge/gqlbridge:dev .
#
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ...
# (the build stage runs on the builder's platform and cross-compiles).
# deploy/validate runs the same go build command and checks the binary is static.

FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/bridge ./cmd/bridge

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/bridge /bridge
USER 65532:65532
# 50051: gRPC (SubscriptionService, health, reflection); 9090: admin (/metrics, /healthz, /readyz).
# The config must set server.grpc_address and server.admin_address to listen on
# all interfaces (e.g. ":50051", ":9090"): the defaults are loopback-only.
EXPOSE 50051 9090
ENTRYPOINT ["/bridge"]
CMD ["serve", "--config", "/etc/gqlbridge/config.yaml"]
