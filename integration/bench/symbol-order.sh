#!/usr/bin/env bash
# Regenerates integration/bench/symbol-order.txt: the functions drainit
# runs, in first-call order, for the linker's --symbol-ordering-file (the
# Dockerfile and the bench pass it to rust-lld). Placing them together at
# the start of .text makes the pages drainit touches few and contiguous:
# idle RSS is about the pages touched (see docs/performance.md), so this
# halves it. Not needed for correctness: names that no longer match (after
# a toolchain or dependency update) are ignored, and the binary only loses
# the benefit. Rerun it after such an update, or when RSS creeps up:
#
#   integration/bench/symbol-order.sh
#
# It builds drainit as the Dockerfile does, but with its symbol table,
# and records with valgrind (callgrind) every function called while it
# starts with the server on, answers each endpoint, forwards a signal,
# runs a drain, stops the app and exits. Needs valgrind and curl.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=x86_64-unknown-linux-gnu
ORDER=$HERE/symbol-order.txt
[ -f "$ORDER" ] || : >"$ORDER"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for tool in valgrind curl python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

# The release flags of the Dockerfile (the same RUSTFLAGS, so the same
# symbol names), plus the symbol table for the final link only.
# Cargo does not track the order file: touch a source so that the binary
# recorded is linked with the current one.
touch "$ROOT/src/main.rs"
(cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static \
-C link-arg=-Wl,--symbol-ordering-file=$ORDER -C link-arg=-Wl,--no-warn-symbol-ordering \
-C link-arg=-Wl,-T,$HERE/text-layout.ld" \
    CARGO_TARGET_DIR="$ROOT/target/bench" \
    cargo rustc --quiet --release --locked --target "$TARGET" --bin drainit -- -C strip=none)
cp "$ROOT/target/bench/$TARGET/release/drainit" "$WORK/drainit"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Records drainit (arguments: its own) under callgrind into $WORK/$1.out
# until the lifecycle is ready, idles a second, then stops it with SIGTERM.
record_idle() {
    local out=$1 pid i
    shift
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$WORK/$out.out" \
        "$WORK/drainit" "$@" -- sleep 60 2>"$WORK/$out.log" &
    pid=$!
    for ((i = 0; i < 300; i++)); do
        grep -q "ready" "$WORK/$out.log" && break
        sleep 0.1
    done
    sleep 1
    kill -TERM "$pid"
    wait "$pid" || true
}

# First what an idle drainit runs, so that it is placed first and an idle
# drainit touches the fewest pages: the start with the server on and no
# drain step, until the lifecycle is ready, then the stop the core handles
# alone (the trigger, the direct stop, the reap and the exit with the app);
# then the same with the server off (--listen off, no config file).
printf '[http]\nlisten = "127.0.0.1:%s"\n' "$PORT" >"$WORK/plain.toml"
record_idle callgrind-idle -c "$WORK/plain.toml"
record_idle callgrind-off --listen off

# Then the rest: every endpoint, a forwarded signal, a drain.
cat >"$WORK/drainit.toml" <<TOML
[http]
listen = "127.0.0.1:$PORT"

[[drain]]
sleep = "100ms"
TOML
valgrind --tool=callgrind --demangle=no --callgrind-out-file="$WORK/callgrind.out" \
    "$WORK/drainit" -c "$WORK/drainit.toml" -- sh -c 'trap "" HUP; exec sleep 60' 2>"$WORK/log" &
pid=$!
for ((i = 0; i < 300; i++)); do
    curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz" && break
    sleep 0.1
done
for path in healthz readyz livez status metrics drain poststart nope; do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/$path" || true
done
kill -HUP "$pid" # forwarded; the app ignores it
curl -s -o /dev/null "http://127.0.0.1:$PORT/prestop" || true
kill -TERM "$pid"
wait "$pid" || true
nm "$WORK/drainit" | awk '{ print $NF }' >"$WORK/symbols"
python3 - "$ORDER" "$WORK/symbols" "$WORK/callgrind-idle.out" "$WORK/callgrind-off.out" \
    "$WORK/callgrind.out" <<'EOF'
import re, sys
# callgrind calls glibc's start-up "(below main)": name it.
names = ["_start", "__libc_start_main", "__libc_start_main_impl", "__libc_start_call_main"]
seen = set(names)
# The runs in order; a function keeps the place of its first call.
for out in sys.argv[3:]:
    ids = {}
    for line in open(out):
        if not line.startswith(("fn=", "cfn=")):
            continue
        m = re.match(r"\((\d+)\)(?: (.*))?", line.split("=", 1)[1].strip())
        if not m:
            continue
        i, name = m.groups()
        if name:
            ids[i] = name
        name = ids.get(i)
        if name and name not in seen and not name.startswith("0x"):
            seen.add(name)
            names.append(name)
# What valgrind cannot record goes first, with start-up: the variant of
# each string function (IFUNC) that this CPU runs; the rest of each
# family goes last, for other CPUs.
start, recorded = names[:4], names[4:]
front, back = [], []
symbols = open(sys.argv[2]).read().split()
# glibc picks string functions by CPU at start-up, and valgrind's CPU is
# not the real one: keep every variant of each family used.
variant = re.compile(r"^(__\w+?)_(sse2|ssse3|sse4_1|sse4_2|sse42|avx2|avx|evex|avx512)")
families = {m.group(1) for m in map(variant.match, recorded) if m}
# A resolver run at start-up (IRELATIVE) names a family whose calls
# valgrind may have served with its own replacement (strcmp): keep it too.
families |= {"__" + n[: -len("_ifunc")] for n in recorded if n.endswith("_ifunc")}
cpu = open("/proc/cpuinfo").read()
native = ("evex", "avx512") if " avx512vl" in cpu else ("avx2",) if " avx2" in cpu else ("sse2",)
for family in sorted(families):
    for sym in symbols:
        if sym.startswith(family + "_") and sym not in seen:
            seen.add(sym)
            mine = any(t in sym for t in native) and ("rtm" not in sym or " rtm" in cpu)
            (front if mine else back).append(sym)
# posix_spawn's child runs in drainit's memory (CLONE_VM | CLONE_VFORK),
# where valgrind does not follow it: what it runs between the clone and
# the exec is named here, so its pages are with the rest.
child = re.compile(r"^(__)?(posix_spawn\w*|spawni\w*|__spawn\w*|libc_sigaction|sigaction|"
                   r"sigprocmask|pthread_sigmask|setpgid|chdir|execve|execvpe|"
                   r"sigismember|sigemptyset|sigaddset|_exit|getpid|dup2|close_nocancel)$")
# glibc's static start-up links the vDSO (setup_vdso, then a symbol lookup
# per vDSO function, with strcmp); valgrind maps no vDSO, so none of it
# is recorded.
vdso = re.compile(r"^(setup_vdso\w*|_dl_new_object|_dl_add_to_namespace_list|_dl_setup_hash|"
                  r"_dl_lookup_symbol_x|do_lookup_x|check_match|_dl_name_match_p|\w*dl_vdso_vsym|"
                  r"_dl_elf_hash|_dl_new_hash|elf_get_dynamic_info|_dl_higher_prime_number|"
                  r"_dl_debug_initialize|_dl_check_protected_symbol)$")
# crtbegin's start-up and exit functions, run from .init_array and
# .fini_array, which callgrind does not name.
crt = re.compile(r"^(frame_dummy|register_tm_clones|deregister_tm_clones|__do_global_dtors_aux)$")
for sym in symbols:
    if (child.match(sym) or vdso.match(sym) or crt.match(sym)) and sym not in seen:
        seen.add(sym)
        front.append(sym)
names = start + front + recorded + back
open(sys.argv[1], "w").write("\n".join(names) + "\n")
print(f"{len(names)} functions -> {sys.argv[1]}", file=sys.stderr)
EOF
