#!/usr/bin/env bash
# Build the hypervisor and the test guests (release profile) and boot the
# hypervisor under QEMU virt at EL2, with a guest to run.
#
#   scripts/run.sh [options] [qemu args...]
#
# Options (before, after or among the QEMU arguments):
#   --guest NAME|FILE   the guest: a test guest by name (guests/src/bin/NAME.rs:
#                       hello touch smp rom relax noslot psci exit migrate bench) or any raw
#                       aarch64 image, e.g. an arm64 Linux Image (a path; a
#                       file named like a test guest needs a ./). Default: smp.
#                       It goes to QEMU as -initrd.
#   --initrd FILE       an initramfs for the --guest kernel: the two go to QEMU
#                       as one guest bundle (cargo xtask bundle; docs/guest-abi.md).
#   --linux             Debian's arm64 kernel with a busybox initramfs
#                       (scripts/linux.sh fetches and caches them under
#                       target/linux/), an interactive shell on the console.
#                       Defaults: --smp 2 --mem 512M, guest command line
#                       "console=ttyAMA0 panic=-1 hyp.init=shell" (--guest-args
#                       are added after it), --console raw on a terminal.
#   --console log|raw   the guest's output as tagged, escaped lines (log, the
#                       default) or byte for byte (raw: a terminal session).
#                       Typing goes to the guest either way; Ctrl-A x ends the
#                       run, Ctrl-A h lists the keys.
#   --vm SPEC           one VM (repeat for several): comma-separated settings,
#                       guest=NAME|FILE (required), cpus=LIST (its physical
#                       CPUs, one vCPU each, e.g. 0-1,3; required), mem=SIZE
#                       (default 128M), initrd=FILE, block=4K|2M|1G,
#                       budget=PAGES (its stage-2 table pages), then args=...
#                       (its command line, the rest of SPEC). VM n is the
#                       n-th; QEMU gets the CPUs and memory they need.
#   --vms FILE          VMs from a file, one SPEC per line (# comments).
#   --no-guest          no guest: boot the hypervisor only (guest=none).
#   --smp N             N vCPUs (guest.smp=N) on N physical CPUs (QEMU -smp N).
#   --mem SIZE          guest RAM, e.g. 128M, 1G: bytes with an optional K/M/G
#                       suffix (guest.mem=SIZE); QEMU gets -m SIZE + 512M, at
#                       least 1G.
#   --guest-args "..."  the guest's command line (/chosen/bootargs), e.g.
#                       "touch=16": added after `--` in the hypervisor's.
#   --help              this text.
#   --                  everything after goes to QEMU unchanged.
#
# Other arguments go to QEMU after the defaults (a later -smp/-m/-cpu
# overrides the default; an -initrd of your own replaces the default guest).
# The kernel command line is "log=info" unless you pass -append "..."; the
# guest.* arguments above are added to it either way (before any ` -- `, the
# start of the guest's part).
#
# The exit status is the run's verdict (docs/guest-abi.md has the table): 0
# success; 1-63 a guest's SYSTEM_OFF status; 64 a bad option here; 65 a VM
# the hypervisor stopped; 66 SYSTEM_RESET under reset=exit; 67 no vCPU left;
# 68 a failed job; 69 ended from the console; 70 the hypervisor failed; 71 no
# verdict; 124 time-out. The hypervisor prints it as its last line, with a
# token made here and passed as verdict.token= (no guest can read it).
#
# Environment:
#   RUN_TIMEOUT=SECONDS   kill QEMU after this long (default: no timeout)
#   RUN_DRY=1             print the QEMU command line instead of building and running
#   HYP_NO_BUILD=1        skip the cargo build (use the last images)
#   QEMU=...              QEMU binary (default qemu-system-aarch64)
#   HYP_KERNEL=PATH       boot this file instead of the built hypervisor image
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/image.sh
source "$root/scripts/image.sh"

usage_error() {
    echo "run.sh: $*" >&2
    echo "run.sh: see scripts/run.sh --help" >&2
    exit 64
}

# Whether NAME is a test guest's.
is_guest_name() {
    local name
    for name in $(guest_names); do
        [[ "$name" == "$1" ]] && return 0
    done
    return 1
}

# MiB (rounded up) in a SIZE as guest.mem= takes it: bytes, or K/M/G.
size_mib() {
    local n="${1%[KMG]}"
    case "$1" in
        *K) echo $(((n + 1023) / 1024)) ;;
        *M) echo "$n" ;;
        *G) echo $((n * 1024)) ;;
        *) echo $(((n + 1048575) / 1048576)) ;;
    esac
}

guest="" guest_given=0 no_guest=0 smp="" mem="" guest_args="" qemu_args=()
initrd_file="" linux=0 console_mode="" vm_specs=() vm_file=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --guest | --smp | --mem | --guest-args | --initrd | --console | --vm | --vms)
            [[ $# -ge 2 ]] || usage_error "$1 needs a value"
            case "$1" in
                --vm) vm_specs+=("$2") ;;
                --vms) vm_file="$2" ;;
                --guest) guest="$2" guest_given=1 ;;
                --initrd) initrd_file="$2" ;;
                --console) console_mode="$2" ;;
                --smp) smp="$2" ;;
                --mem) mem="$2" ;;
                --guest-args) guest_args="$2" ;;
            esac
            shift 2
            ;;
        --guest=*) guest="${1#*=}" guest_given=1 && shift ;;
        --smp=*) smp="${1#*=}" && shift ;;
        --mem=*) mem="${1#*=}" && shift ;;
        --guest-args=*) guest_args="${1#*=}" && shift ;;
        --initrd=*) initrd_file="${1#*=}" && shift ;;
        --console=*) console_mode="${1#*=}" && shift ;;
        --linux) linux=1 && shift ;;
        --no-guest) no_guest=1 && shift ;;
        --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        --)
            shift
            qemu_args+=("$@")
            break
            ;;
        --*) usage_error "unknown option $1" ;;
        *) qemu_args+=("$1") && shift ;;
    esac
done

[[ -z "$smp" || "$smp" =~ ^[1-9][0-9]*$ ]] || usage_error "--smp $smp: expected a number of vCPUs"
[[ -z "$mem" || "${mem^^}" =~ ^[1-9][0-9]*[KMG]?$ ]] ||
    usage_error "--mem $mem: expected a size such as 128M or 1G"
mem="${mem^^}"
[[ $guest_given == 0 || -n "$guest" ]] || usage_error "--guest needs a file or a test guest name"
[[ $no_guest == 0 || -z "$guest" ]] || usage_error "--guest and --no-guest together"
[[ -z "$console_mode" || "$console_mode" == log || "$console_mode" == raw ]] ||
    usage_error "--console $console_mode: expected log or raw"
if [[ $linux == 1 ]]; then
    [[ -z "$guest" && -z "$initrd_file" && $no_guest == 0 ]] ||
        usage_error "--linux gives the guest: no --guest, --initrd or --no-guest with it"
    "$root/scripts/setup.sh" run
    mapfile -t linux_files < <("$root/scripts/linux.sh")
    [[ ${#linux_files[@]} == 2 ]] || usage_error "scripts/linux.sh failed"
    guest="${linux_files[0]}" guest_given=1 initrd_file="${linux_files[1]}"
    smp="${smp:-2}" mem="${mem:-512M}"
    guest_args="console=ttyAMA0 panic=-1 hyp.init=shell${guest_args:+ $guest_args}"
    if [[ -z "$console_mode" && -t 0 ]]; then console_mode=raw; fi
fi
if [[ ${#vm_specs[@]} -gt 0 || -n "$vm_file" ]]; then
    [[ -z "$guest" && -z "$initrd_file" && $linux == 0 && $no_guest == 0 && -z "$smp" && -z "$mem" && -z "$guest_args" ]] ||
        usage_error "--vm/--vms describe every VM: no --guest, --initrd, --linux, --no-guest, --smp, --mem or --guest-args with them"
    [[ -z "$vm_file" || -f "$vm_file" ]] || usage_error "--vms $vm_file: no such file"
fi
[[ -z "$initrd_file" || -f "$initrd_file" ]] || usage_error "--initrd $initrd_file: no such file"
[[ -z "$initrd_file" || -n "$guest" ]] || usage_error "--initrd needs --guest KERNEL"

user_initrd=0
for arg in "${qemu_args[@]}"; do
    if [[ "$arg" == -initrd ]]; then user_initrd=1; fi
done
[[ -z "$guest" || $user_initrd == 0 ]] || usage_error "--guest and -initrd both give the guest"

# What a fresh machine lacks: QEMU, and Rust and an objcopy unless HYP_NO_BUILD=1.
if [[ "${RUN_DRY:-0}" != 1 ]]; then
    "$root/scripts/setup.sh" "$([[ "${HYP_NO_BUILD:-0}" == 1 ]] && echo boot || echo run)"
fi
if [[ "${HYP_NO_BUILD:-0}" != 1 && "${RUN_DRY:-0}" != 1 ]]; then
    build_image >&2
fi

# The guest image: a test guest by name, else a file; the default guest
# unless there is none or the caller passes its own -initrd. Several VMs:
# their bundle, and the CPUs and memory QEMU must give them.
guest_file=""
if [[ ${#vm_specs[@]} -gt 0 || -n "$vm_file" ]]; then
    mkdir -p "$root/target/bundles"
    bundle="$(mktemp "$root/target/bundles/vms.XXXXXX")"
    vm_args=()
    for spec in "${vm_specs[@]}"; do vm_args+=(--vm-spec "$spec"); done
    if [[ -n "$vm_file" ]]; then vm_args+=(--vm-file "$vm_file"); fi
    machine_line="$(cd "$root" && cargo xtask bundle -o "$bundle" --guest-dir "$GUEST_DIR" "${vm_args[@]}")" ||
        { rm -f "$bundle"; usage_error "bad VM description (above)"; }
    guest_file="$bundle"
    read -r _ _ vm_cpus _ vm_mib <<<"$machine_line"
    smp_needed="$vm_cpus" mem_needed="$vm_mib"
elif [[ $no_guest == 0 && $user_initrd == 0 ]]; then
    name="${guest:-$GUEST_DEFAULT}"
    if [[ "$name" != */* ]] && is_guest_name "$name"; then
        guest_file="$(guest_image "$name")"
        if [[ ! -f "$guest_file" && "${RUN_DRY:-0}" != 1 ]]; then
            usage_error "test guest $name is not built ($guest_file): run without HYP_NO_BUILD=1"
        fi
    elif [[ -f "$guest" ]]; then
        guest_file="$guest"
        if [[ "$(head -c 4 "$guest_file" | tr -d '\0')" == $'\x7fELF' ]]; then
            usage_error "--guest $guest is an ELF file: the guest must be a raw image (llvm-objcopy -O binary ELF IMAGE)"
        fi
    elif [[ -e "$guest" ]]; then
        usage_error "--guest $guest: not a regular file"
    else
        usage_error "--guest $guest: no such file, nor a test guest ($(guest_names | tr '\n' ' ' | sed 's/ $//'))"
    fi
fi

# Hypervisor arguments for the guest (host_extra), and the guest's own.
# A fresh token for the verdict line, so that no guest output can pass for it.
token="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
host_extra=("verdict.token=$token")
if [[ -n "$smp" ]]; then host_extra+=("guest.smp=$smp"); fi
if [[ -n "$console_mode" ]]; then host_extra+=("guest.console=$console_mode"); fi
if [[ -n "$mem" ]]; then host_extra+=("guest.mem=$mem"); fi
if [[ $no_guest == 1 ]]; then host_extra+=("guest=none"); fi
guest_words=()
read -r -a guest_words <<<"$guest_args" || true

# A kernel command line with host_extra added to the hypervisor's part (before
# a lone `--`) and guest_words to the guest's (after it).
with_guest_args() {
    local word seen=0 words=() host=() guest=()
    read -r -a words <<<"$1" || true
    for word in "${words[@]}"; do
        if [[ $seen == 0 && "$word" == -- ]]; then
            seen=1
        elif [[ $seen == 0 ]]; then
            host+=("$word")
        else
            guest+=("$word")
        fi
    done
    host+=("${host_extra[@]}")
    guest+=("${guest_words[@]}")
    if [[ ${#guest[@]} -gt 0 ]]; then
        echo "${host[*]} -- ${guest[*]}"
    else
        echo "${host[*]}"
    fi
}

# The caller's -append replaces the default log level; guest args go in either way.
have_append=0
for ((i = 0; i < ${#qemu_args[@]}; i++)); do
    if [[ "${qemu_args[i]}" == -append ]] && ((i + 1 < ${#qemu_args[@]})); then
        have_append=1
        qemu_args[i + 1]="$(with_guest_args "${qemu_args[i + 1]}")"
    fi
done
append=()
[[ $have_append == 1 ]] || append=(-append "$(with_guest_args "log=info")")

# The machine: the default one, with --smp/--mem's CPU count and RAM size.
qemu_smp="" qemu_mem=""
if [[ -n "$smp" ]]; then qemu_smp="$smp"; fi
# Several VMs: at least the CPUs they name (the default's 4) and their memory.
if [[ -n "${smp_needed:-}" ]]; then
    qemu_smp=$((smp_needed > 4 ? smp_needed : 4))
    qemu_mem="${mem_needed}M"
fi
if [[ -n "$mem" ]]; then
    qemu_mib=$(($(size_mib "$mem") + 512))
    ((qemu_mib >= 1024)) || qemu_mib=1024
    qemu_mem="${qemu_mib}M"
fi
machine=()
for ((i = 0; i < ${#QEMU_BASE_ARGS[@]}; i++)); do
    machine+=("${QEMU_BASE_ARGS[i]}")
    case "${QEMU_BASE_ARGS[i]}" in
        -smp) [[ -z "$qemu_smp" ]] || { machine+=("$qemu_smp") && i=$((i + 1)); } ;;
        -m) [[ -z "$qemu_mem" ]] || { machine+=("$qemu_mem") && i=$((i + 1)); } ;;
    esac
done
# A kernel with an initramfs: one bundle (hvcore::bundle) for QEMU's -initrd.
if [[ -n "$initrd_file" && -n "$guest_file" && "${RUN_DRY:-0}" != 1 ]]; then
    mkdir -p "$root/target/bundles"
    bundle="$(mktemp "$root/target/bundles/bundle.XXXXXX")"
    (cd "$root" && cargo xtask bundle -o "$bundle" --kernel "$guest_file" --initrd "$initrd_file") ||
        usage_error "could not bundle $guest_file with $initrd_file"
    guest_file="$bundle"
fi
initrd=()
if [[ -n "$guest_file" ]]; then initrd=(-initrd "$guest_file"); fi

cmd=("${QEMU:-qemu-system-aarch64}" "${machine[@]}"
    -kernel "${HYP_KERNEL:-$HYP_IMG}" "${initrd[@]}" "${append[@]}" "${qemu_args[@]}")
if [[ "${RUN_DRY:-0}" == 1 ]]; then
    # One line a shell can run: arguments quoted only where needed.
    line=""
    for arg in "${cmd[@]}"; do
        if [[ ! "$arg" =~ ^[A-Za-z0-9_./,=:+@%-]+$ ]]; then
            arg="'${arg//\'/\'\\\'\'}'"
        fi
        line="${line:+$line }$arg"
    done
    echo "$line"
    exit 0
fi
# QEMU's output goes to the terminal and to a log, where the verdict line
# is looked up once QEMU has ended.
log="$(mktemp "${TMPDIR:-/tmp}/hyp-run.XXXXXX")"
trap 'rm -f "$log" "${bundle:-}"' EXIT
timeout=()
if [[ -n "${RUN_TIMEOUT:-}" ]]; then
    # --foreground when typing into the guest: QEMU must own the terminal.
    fg=()
    if [[ -t 0 ]]; then fg=(--foreground); fi
    timeout=(timeout "${fg[@]}" --kill-after=5 "$RUN_TIMEOUT")
fi
set +e
"${timeout[@]}" "${cmd[@]}" | tee "$log"
codes=("${PIPESTATUS[@]}")
set -e
if [[ -n "${RUN_TIMEOUT:-}" && ${codes[0]} == 124 ]]; then
    echo "run.sh: timed out after ${RUN_TIMEOUT}s" >&2
    exit 124
fi
status="$(tr -d '\r' <"$log" | sed -n "s/^run: verdict $token: exit status \([0-9]\{1,3\}\)\$/\1/p" | tail -n 1)"
if [[ -z "$status" ]]; then
    echo "run.sh: QEMU ended (status ${codes[0]}) with no verdict line from the hypervisor" >&2
    exit 71
fi
exit "$status"
