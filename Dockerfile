# The portcullis image: the binary and the shipped policies on a small Debian, run as a
# non-root user. Build: docker build -t portcullis .   (compose.yaml does it for you)
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-unknown-unknown
COPY . .
RUN cargo policies \
 && cargo build --release -p portcullis \
 && mkdir -p /out/policies \
 && cp target/release/portcullis /out/ \
 && for p in acl namespace_owner read_only protected_tags immutable_tags signed_images; do \
      cp "target/wasm32-unknown-unknown/release/$p.wasm" /out/policies/; \
    done

FROM debian:bookworm-slim
# ca-certificates: for an https upstream. Debian's own versions: pinning them would break the
# build at every security update.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/portcullis portcullis \
 && mkdir -p /var/lib/portcullis/keys /var/lib/portcullis/auth /etc/portcullis \
 && chown -R portcullis /var/lib/portcullis
COPY --from=build /out/portcullis /usr/local/bin/portcullis
COPY --from=build /out/policies/ /usr/local/lib/portcullis/policies/
COPY deploy/docker/entrypoint.sh /usr/local/bin/portcullis-entrypoint
USER 10001
VOLUME ["/var/lib/portcullis"]
EXPOSE 5000 5001
ENTRYPOINT ["portcullis-entrypoint"]
CMD ["serve", "--config", "/etc/portcullis/portcullis.toml"]
