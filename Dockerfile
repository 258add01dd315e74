# syntax=docker/dockerfile:1
# Small images of both binaries, one target each:
#   docker build --target novas -t nova/novas .
#   docker build --target novac -t nova/novac .
# Both run as an unprivileged user (uid 10001) and need no capabilities.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The bundled SQLite and ring compile C: gcc and libc6-dev come with the
# image. Sources last, so the dependency layer is reused between edits.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin novas --bin novac \
    && mkdir -p /out \
    && cp target/release/novas target/release/novac /out/

FROM debian:bookworm-slim AS runtime
# ca-certificates: NOVAC_CA_FILE may name a system CA; a shared store by
# URL may use TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 nova \
    && useradd --system --uid 10001 --gid nova --home-dir /nonexistent --shell /usr/sbin/nologin nova

FROM runtime AS novac
COPY --from=build /out/novac /usr/local/bin/novac
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/novac"]

FROM runtime AS novas
COPY --from=build /out/novas /usr/local/bin/novas
RUN mkdir -p /var/lib/novas && chown 10001:10001 /var/lib/novas
VOLUME /var/lib/novas
# A non-root process cannot bind port 80: the image listens on 8080 and
# compose publishes it as 80.
ENV NOVAS_DATA_DIR=/var/lib/novas \
    NOVAS_HTTP_PORT=8080
EXPOSE 8080 9022 2222 6443 40000-41000
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/novas"]
CMD ["serve"]
