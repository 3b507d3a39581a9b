# Step runner shared by test.sh and smoke.sh (sourced, not run).
#
#   step "name" command args...   run a command, its output to a log file;
#                                 print "PASS name" or "FAIL name" (+ log tail)
#   pass "name" / fail "name" "why"   record a result computed by hand
#   summary                       print "N passed, N failed"; false if any failed
#
# Expects $root = the repository root.

PASSED=${PASSED:-0}
FAILED=${FAILED:-0}
TEST_LOG_DIR="${TEST_LOG_DIR:-$root/target/test-logs}"
mkdir -p "$TEST_LOG_DIR"

# A file name for a step's log.
log_path() {
    local slug
    slug="$(printf '%s' "$1" | tr -c 'A-Za-z0-9._-' '_')"
    echo "$TEST_LOG_DIR/$slug.log"
}

pass() {
    PASSED=$((PASSED + 1))
    echo "PASS $1"
}

fail() {
    FAILED=$((FAILED + 1))
    echo "FAIL $1${2:+: $2}"
}

step() {
    local name="$1" log
    shift
    log="$(log_path "$name")"
    if "$@" >"$log" 2>&1; then
        pass "$name"
    else
        fail "$name" "exit $? (log: $log)"
        tail -n 25 "$log" | sed 's/^/    | /'
    fi
}

summary() {
    echo "$PASSED passed, $FAILED failed"
    [[ $FAILED == 0 ]]
}
