# drainit as a from-scratch image that holds one static binary, /drainit,
# and its licence text.
#
# Use it as a source stage in your own image:
#
#   COPY --from=drainit /drainit /sbin/drainit
#   ENTRYPOINT ["/sbin/drainit", "--"]
#   CMD ["your-app", "--flag"]
#
# Build: docker build -t drainit .

# The toolchain the symbol order below was recorded with: its names only
# match this compiler's (integration/bench/symbol-order.sh re-records it).
FROM rust:1.95-bookworm AS build
WORKDIR /src
# glibc linked statically: the binary runs in any image, scratch and
# distroless included. (drainit resolves app.user from /etc/passwd itself,
# never through NSS, so a static glibc loses nothing it needs.) Not
# position-independent, like tini-static: no start-up relocation pass,
# 140 KiB smaller, fewer pages touched. The functions drainit runs are
# linked together first (rust-lld's --symbol-ordering-file), with glibc's
# start-up sections and IFUNC stubs beside them (text-layout.ld), which
# halves its idle RSS (docs/performance.md).
ENV RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static \
-C link-arg=-Wl,--symbol-ordering-file=/src/symbol-order.txt -C link-arg=-Wl,--no-warn-symbol-ordering \
-C link-arg=-Wl,-T,/src/text-layout.ld"
COPY Cargo.toml Cargo.lock ./
COPY integration/bench/symbol-order.txt ./symbol-order.txt
COPY integration/bench/text-layout.ld ./text-layout.ld
COPY src ./src
RUN cargo build --release --locked --target x86_64-unknown-linux-gnu \
    && cp target/x86_64-unknown-linux-gnu/release/drainit /drainit \
    && /drainit --version

FROM scratch
COPY --from=build /drainit /drainit
COPY LICENSE /usr/share/doc/drainit/LICENSE
ENTRYPOINT ["/drainit"]
