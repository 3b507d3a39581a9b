#!/usr/bin/env bash
# The cargo fuzz targets of fuzz/ (hvcore's decoders of guest- and
# user-controlled input; docs/testing.md says what each asserts): builds
# them, runs each for a while, one PASS/FAIL line per target, ending with
# "N passed, N failed"; exits non-zero if any failed.
#
#   scripts/fuzz.sh [--quick | --time SECONDS] [TARGET...]
#       every target (or those named) for SECONDS each (default 60; --quick:
#       5, what scripts/test.sh runs). A crash or a broken invariant is a
#       FAIL line with the input that did it (fuzz/artifacts/TARGET/...)
#       and how to run it again. The corpus grows in fuzz/corpus/TARGET
#       from run to run (not committed).
#
# Installs cargo-fuzz for nightly when missing (cargo install, from
# crates.io). Targets are built without a sanitizer (-s none): hvcore is
# safe Rust, so AddressSanitizer finds nothing Rust's checks do not, and
# halves the speed; debug assertions and overflow checks stay on. Logs go
# to target/test-logs/fuzz-TARGET.log.
#
# test.sh sources this file and calls fuzz_targets after the host tests.

FUZZ_TARGETS=(esr sysreg mmio vgic pl011 hypercall bootargs platform boot_image vmspec s1walk)

# cargo fuzz, with the nightly toolchain, for fuzz/.
fuzz_cargo() {
    (cd "$root/fuzz" && RUSTUP_AUTO_INSTALL=0 cargo +nightly fuzz "$@")
}

# fuzz_build: builds every target (one cargo build, shared dependencies).
fuzz_build() {
    fuzz_cargo build -s none
}

# fuzz_one TARGET SECONDS: runs one target; PASS with its numbers, or FAIL
# with the input that failed.
fuzz_one() {
    local target="$1" seconds="$2" name="fuzz $1" log status artifact runs cov
    log="$(log_path "fuzz-$target")"
    status=0
    # -timeout: an input that takes 10 s is a hang, and a failure.
    fuzz_cargo run -s none "$target" -- -max_total_time="$seconds" -timeout=10 \
        -print_final_stats=1 </dev/null >"$log" 2>&1 || status=$?
    artifact="$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)"
    if [[ $status == 0 && -z "$artifact" ]]; then
        runs="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log")"
        cov="$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' "$log" | tail -n 1)"
        pass "$name (${runs:-? runs}, ${cov:-no coverage line})"
        return
    fi
    if [[ -n "$artifact" ]]; then
        fail "$name" "input $artifact (log: $log)"
        echo "    | again: (cd fuzz && cargo +nightly fuzz run -s none $target $artifact)"
    else
        fail "$name" "exit $status (log: $log)"
    fi
    # What went wrong: the panic and its message, else libFuzzer's word (a
    # time-out, memory).
    if grep -q 'panicked at' "$log"; then
        grep -m 1 -A 1 'panicked at' "$log"
    else
        grep -m 1 'ERROR: libFuzzer' "$log"
    fi | sed 's/^/    | /'
}

# fuzz_targets SECONDS [TARGET...]: builds, then runs each target (every
# one by default) for SECONDS.
fuzz_targets() {
    local seconds="$1" target
    shift
    local targets=("$@")
    [[ ${#targets[@]} -gt 0 ]] || targets=("${FUZZ_TARGETS[@]}")
    step "fuzz: build the targets (cargo fuzz, nightly)" fuzz_build || true
    if [[ ! -x "$root/fuzz/target/x86_64-unknown-linux-gnu/release/${targets[0]}" ]]; then
        fail "fuzz targets" "not built"
        return
    fi
    for target in "${targets[@]}"; do
        fuzz_one "$target" "$seconds"
    done
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -uo pipefail
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    seconds=60
    targets=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --quick) seconds=5 ;;
            --time)
                seconds="${2:-}"
                shift
                ;;
            -h | --help)
                sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
                exit 0
                ;;
            -*) echo "fuzz.sh: unknown option $1 (--quick, --time SECONDS, --help)" >&2 && exit 2 ;;
            *)
                [[ " ${FUZZ_TARGETS[*]} " == *" $1 "* ]] ||
                    { echo "fuzz.sh: no target $1 (targets: ${FUZZ_TARGETS[*]})" >&2 && exit 2; }
                targets+=("$1")
                ;;
        esac
        shift
    done
    [[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --time wants a number of seconds" >&2 && exit 2; }
    # shellcheck source=scripts/lib.sh
    source "$root/scripts/lib.sh"
    if ! command -v cargo-fuzz >/dev/null; then
        echo "fuzz.sh: installing cargo-fuzz (cargo +nightly install cargo-fuzz --locked)"
        if ! RUSTUP_AUTO_INSTALL=0 cargo +nightly install cargo-fuzz --locked >"$(log_path fuzz-install)" 2>&1; then
            echo "fuzz.sh: missing cargo-fuzz: install failed (log: $(log_path fuzz-install)); needs nightly Rust (scripts/setup.sh test) and crates.io" >&2
            exit 1
        fi
    fi
    fuzz_targets "$seconds" "${targets[@]}"
    summary
fi
