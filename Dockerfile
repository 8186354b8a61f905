# Starling in a container: a static binary on a distroless base, run as a
# non-root user, the store in the /data volume. Not built by the tests
# (they run without a Docker engine); build and run it with:
#   docker build --build-arg VERSION=$(git describe --tags --always) -t starling .
#   docker run -p 1883:1883 -p 8080:8080 -v starling-data:/data starling
# With a config file: add -v ./starling.yaml:/etc/starling/starling.yaml:ro
# and append: -config /etc/starling/starling.yaml -data /data
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/starling ./cmd/starling \
 && mkdir /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/starling /starling
# Owned by the nonroot user, so a new named volume mounted here is too.
COPY --from=build --chown=65532:65532 /out/data /data
VOLUME /data
USER 65532:65532
EXPOSE 1883 8080
ENTRYPOINT ["/starling"]
# Every interface inside the container: the published ports decide who
# reaches it. The broker warns at start while anonymous clients are let in
# without an ACL.
CMD ["-data", "/data", "-tcp", ":1883", "-http", ":8080"]
