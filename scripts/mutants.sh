#!/usr/bin/env bash
# Mutation testing of the walker and the core: runs `cargo mutants` on their
# files (or on the files a change touched) and prints, per crate, the score
# and every mutant no test caught. See docs/testing.md for when to run it
# and what every missed mutant left means.
#
#   scripts/mutants.sh                  the walker's and the core's files
#   scripts/mutants.sh --changed [BASE] the files touched since the branch
#                                       left BASE (default main), committed
#                                       or not
#   scripts/mutants.sh ... -- ARGS      ARGS go to cargo mutants (e.g. --shard 1/4)
#
# Env: MUTANTS_CRATES (default "pgtable hvcore"), MUTANTS_JOBS (parallel mutants, default 1), MUTANTS_TIMEOUT (least
# seconds a mutant's tests may take before they count as hung, default 120),
# MUTANTS_NICE (default 19), MUTANTS_OUT (default target/mutants).
# cargo-mutants is installed from crates.io if missing. The whole run takes
# hours on a 2-core machine; its output stays in $MUTANTS_OUT/<crate>/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

HOST=x86_64-unknown-linux-gnu
# The files the score is kept for (docs/testing.md).
PGTABLE_FILES=(policy walker ops stage2)
HVCORE_FILES=(s2fault guest_abort esr psci dirty slots bench range)

jobs="${MUTANTS_JOBS:-1}"
timeout="${MUTANTS_TIMEOUT:-120}"
niceness="${MUTANTS_NICE:-19}"
out="${MUTANTS_OUT:-$root/target/mutants}"

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit "${1:-0}"
}

changed=""
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --changed)
            changed="main"
            if [[ $# -gt 1 && "$2" != -* ]]; then
                changed="$2"
                shift
            fi
            ;;
        --help | -h) usage 0 ;;
        --)
            shift
            extra=("$@")
            break
            ;;
        *)
            echo "mutants.sh: unknown argument $1" >&2
            usage 1 >&2
            ;;
    esac
    shift
done

# The source files of `crate` to mutate, one per line.
files_of() {
    local crate=$1 f
    if [[ -z "$changed" ]]; then
        local names
        if [[ "$crate" == pgtable ]]; then names=("${PGTABLE_FILES[@]}"); else names=("${HVCORE_FILES[@]}"); fi
        for f in "${names[@]}"; do echo "crates/$crate/src/$f.rs"; done
        return
    fi
    # Touched since this branch left $changed (committed or not); a
    # module's tests.rs stands for the module.
    git diff --name-only "$(git merge-base "$changed" HEAD)" -- "crates/$crate/src" | while read -r f; do
        [[ "$f" == */tests.rs ]] && f="${f%/tests.rs}.rs"
        [[ -f "$f" ]] && echo "$f"
    done | sort -u
}

if ! command -v cargo-mutants >/dev/null; then
    echo "== installing cargo-mutants from crates.io"
    cargo install --locked cargo-mutants
fi

# Lines of cargo mutants' list of `kind` (caught, missed, timeout, unviable).
count() {
    grep -c . "$dir/$1.txt" || true
}

summary=()
for crate in ${MUTANTS_CRATES:-pgtable hvcore}; do
    mapfile -t files < <(files_of "$crate")
    if [[ ${#files[@]} -eq 0 ]]; then
        summary+=("$crate: no file to mutate")
        continue
    fi
    echo "== $crate: ${files[*]}"
    mkdir -p "$out/$crate"
    args=(-p "$crate" --jobs "$jobs" --minimum-test-timeout "$timeout"
        "--cargo-arg=--target=$HOST" -o "$out/$crate")
    for f in "${files[@]}"; do args+=(-f "$f"); done
    # Shrinking a failing property test only makes a caught mutant slower.
    # `--tests`: the unit and integration tests (no examples, no doc tests).
    status=0
    PROPTEST_MAX_SHRINK_ITERS=0 nice -n "$niceness" \
        cargo mutants "${args[@]}" "${extra[@]}" -- --tests || status=$?
    # 0: all caught; 2: some missed; 3: some timed out. Anything else (a
    # failing baseline, a usage error) means no score.
    if [[ $status -ne 0 && $status -ne 2 && $status -ne 3 ]]; then
        summary+=("$crate: cargo mutants failed (exit $status), see $out/$crate/mutants.out")
        continue
    fi
    dir="$out/$crate/mutants.out"
    caught=$(count caught) missed=$(count missed) timeouts=$(count timeout) unviable=$(count unviable)
    tested=$((caught + missed + timeouts))
    if [[ $tested -gt 0 ]]; then
        permille=$((1000 * caught / tested))
        score="$((permille / 10)).$((permille % 10)) %"
    else
        score="-"
    fi
    summary+=("$crate: score $score ($caught caught of $tested tested; $missed missed, $timeouts timeouts, $unviable unviable)")
    for kind in missed timeout; do
        while read -r line; do
            [[ -n "$line" ]] && summary+=("  $kind: $line")
        done <"$dir/$kind.txt"
    done
done

echo
echo "== mutation score (caught / (caught + missed + timeouts))"
printf '%s\n' "${summary[@]}"
