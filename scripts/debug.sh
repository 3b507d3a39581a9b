#!/usr/bin/env bash
# Debug the hypervisor: QEMU starts halted with its gdb stub on a free port,
# and gdb-multiarch attaches with the ELF's symbols, a breakpoint set at the
# Rust entry point (hyp::hyp_entry::rust_entry).
#
#   scripts/debug.sh [qemu args...]          interactive gdb
#   scripts/debug.sh --check [qemu args...]  batch: break at the Rust entry,
#       then in the guest-abort handler (hyp::vmm::exit::abort::guest_abort),
#       print a backtrace and the exception level, continue to the end;
#       exit 0 only if the breakpoint was hit at EL2 and the run exited 0.
#
# The hypervisor's console goes to a log file (gdb owns the terminal); its
# path is printed. HYP_NO_BUILD=1 skips the build, as for run.sh.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/image.sh
source "$root/scripts/image.sh"

check=0
if [[ "${1:-}" == --check ]]; then
    check=1
    shift
fi

if [[ "${HYP_NO_BUILD:-0}" != 1 ]]; then
    build_image >&2
fi
command -v gdb-multiarch >/dev/null || {
    echo "debug.sh: gdb-multiarch not found (apt-get install gdb-multiarch)" >&2
    exit 1
}

# First TCP port from 1234 that nothing listens on.
port=1234
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
done

# The guest: the default test guest (DEBUG_GUEST=name picks another, or
# DEBUG_GUEST=none for the hypervisor alone); its symbols are loaded too.
guest="${DEBUG_GUEST:-$GUEST_DEFAULT}"
initrd=()
guest_syms=()
if [[ "$guest" != none ]]; then
    initrd=(-initrd "$(guest_image "$guest")")
    guest_syms=(-ex "add-symbol-file $root/target/$HYP_TARGET/$HYP_PROFILE/$guest")
fi

console_log="$root/target/debug-console.log"
token="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
append=(-append "log=info verdict.token=$token")
for arg in "$@"; do
    [[ "$arg" == -append ]] && append=()
done
"${QEMU:-qemu-system-aarch64}" "${QEMU_BASE_ARGS[@]}" -kernel "$HYP_IMG" "${initrd[@]}" "${append[@]}" \
    -gdb "tcp:127.0.0.1:$port" -S "$@" </dev/null >"$console_log" 2>&1 &
qemu_pid=$!
trap 'kill "$qemu_pid" 2>/dev/null; wait "$qemu_pid" 2>/dev/null || true' EXIT
echo "debug.sh: QEMU pid $qemu_pid, gdb stub on 127.0.0.1:$port, console in $console_log" >&2

gdb_args=(
    -q -nx
    -ex "set pagination off"
    -ex "set confirm off"
    -ex "file $HYP_ELF"
    "${guest_syms[@]}"
    -ex "target remote 127.0.0.1:$port"
    -ex "break hyp::hyp_entry::rust_entry"
)

if [[ $check == 0 ]]; then
    gdb-multiarch "${gdb_args[@]}"
    exit 0
fi

gdb_log="$root/target/debug-check.log"
timeout 60 gdb-multiarch -batch "${gdb_args[@]}" \
    -ex "continue" \
    -ex "backtrace" \
    -ex 'printf "current EL = %d\n", ($cpsr >> 2) & 3' \
    -ex "delete" \
    -ex "break hyp::vmm::exit::abort::guest_abort" \
    -ex "continue" \
    -ex "backtrace" \
    -ex 'printf "guest abort: EL = %d, ESR_EL2 below\n", ($cpsr >> 2) & 3' \
    -ex "print/x esr" \
    -ex "delete" \
    -ex "continue" \
    </dev/null >"$gdb_log" 2>&1 || true
cat "$gdb_log"

qemu_status=0
wait "$qemu_pid" || qemu_status=$?
trap - EXIT
echo "--- hypervisor console ---"
cat "$console_log"
echo "--------------------------"

ok=1
grep -q "Breakpoint 1, .*rust_entry" "$gdb_log" || { echo "debug.sh: breakpoint at rust_entry not hit"; ok=0; }
grep -q "^#0 .*rust_entry" "$gdb_log" || { echo "debug.sh: no backtrace from rust_entry"; ok=0; }
grep -q "^current EL = 2$" "$gdb_log" || { echo "debug.sh: not at EL2 at the Rust entry"; ok=0; }
if [[ "$guest" != none ]]; then
    grep -q "Breakpoint 2, .*guest_abort" "$gdb_log" || { echo "debug.sh: breakpoint in the guest-abort handler not hit"; ok=0; }
    grep -q "^#[0-9].*vmm::exit::handle" "$gdb_log" || { echo "debug.sh: no backtrace through the exit path"; ok=0; }
    grep -q "^guest abort: EL = 2," "$gdb_log" || { echo "debug.sh: guest-abort handler not at EL2"; ok=0; }
fi
verdict="$(tr -d '\r' <"$console_log" | sed -n "s/^run: verdict $token: exit status //p" | tail -n 1)"
[[ $qemu_status == 0 && "$verdict" == 0 ]] ||
    { echo "debug.sh: QEMU exited with status $qemu_status, verdict ${verdict:-none}"; ok=0; }
if [[ $ok == 1 ]]; then
    echo "debug.sh: breakpoints hit at EL2 (Rust entry${initrd:+, guest-abort handler}), run exited 0"
    exit 0
fi
exit 1
