#!/usr/bin/env bash
# Build the hypervisor (release profile) and boot it under QEMU virt at EL2.
#
#   scripts/run.sh [qemu args...]     e.g. -smp 2, -append "log=debug"
#
# Extra arguments go to QEMU after the defaults (a later -smp/-m/-cpu
# overrides the default). The exit status is the hypervisor's verdict:
# 0 success, 1 boot error, 2 panic, 3 unexpected exception; 124 = timeout.
#
# Environment:
#   RUN_TIMEOUT=SECONDS   kill QEMU after this long (default: no timeout)
#   HYP_NO_BUILD=1        skip the cargo build (use the last image)
#   QEMU=...              QEMU binary (default qemu-system-aarch64)
#   HYP_KERNEL=PATH       boot this file instead of the built image
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/image.sh
source "$root/scripts/image.sh"

if [[ "${HYP_NO_BUILD:-0}" != 1 ]]; then
    build_image >&2
fi

# Default command line unless the caller passes -append.
append=(-append "log=info")
for arg in "$@"; do
    [[ "$arg" == -append ]] && append=()
done

cmd=("${QEMU:-qemu-system-aarch64}" "${QEMU_BASE_ARGS[@]}" -kernel "${HYP_KERNEL:-$HYP_IMG}" "${append[@]}" "$@")
if [[ -n "${RUN_TIMEOUT:-}" ]]; then
    status=0
    timeout --kill-after=5 "$RUN_TIMEOUT" "${cmd[@]}" || status=$?
    if [[ $status == 124 ]]; then
        echo "run.sh: timed out after ${RUN_TIMEOUT}s" >&2
    fi
    exit "$status"
fi
exec "${cmd[@]}"
