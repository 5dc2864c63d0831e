#!/bin/bash
# multiprog.sh KROOT FW_BINARY - fw beside xdp-filter through the libxdp dispatcher, on a real
# Debian kernel under QEMU. This machine's kernel refuses freplace programs (EPERM: lockdown),
# so the protocol can only run in a VM. Uses the VM scripts of ../shared/vm (or $FW_VM_DIR):
# their initramfs (busybox, fw, ip, tc, bpftool, modules) plus xdp-tools (xdp-filter,
# xdp-loader, libxdp, libbpf and the BPF objects, including libxdp's xdp-dispatcher.o) and the
# guest test multiprog-guest.sh. Exit status: the guest's (0 = every check passed), 3 = no result.
# Env: FW_VM_CACHE, TIMEOUT (s, default 300), QEMU (default: qemu-system-x86_64 on PATH or the
# one `cargo xtask vm` unpacks into the cache).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VM=${FW_VM_DIR:-$HERE/../../../shared/vm}
[ -x "$VM/build-initramfs.sh" ] || VM=/work/shared/vm
CACHE=${FW_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fw-vm}
KROOT=$(cd "$1" && pwd) FW=$(readlink -f "$2")
KVER=$(basename "$(ls -d "$KROOT"/lib/modules/*/ | head -1)")
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
TIMEOUT=${TIMEOUT:-300}
QEMU=${QEMU:-$(command -v qemu-system-x86_64 || echo "$CACHE/qemu/usr/bin/qemu-system-x86_64")}
for t in xdp-filter xdp-loader; do
	command -v $t >/dev/null || { echo "$t is not installed (apt-get install xdp-tools)" >&2; exit 2; }
done

TEST_SCRIPT="$HERE/multiprog-guest.sh" "$VM/build-initramfs.sh" "$KROOT" "$FW" "$OUT/base.cpio.gz" >&2

# xdp-tools and their libraries, appended as a second cpio member (the kernel unpacks both).
R="$OUT/extra"
mkdir -p "$R"
copy_with_libs() {
	install -D -m755 "$1" "$R$2"
	ldd "$1" | awk '/=> \//{print $3} /^[ \t]*\/lib/{print $1}' | while read -r lib; do
		[ -e "$R$lib" ] || install -D -m755 "$(readlink -f "$lib")" "$R$lib"
	done
}
for t in xdp-filter xdp-loader; do copy_with_libs "$(command -v $t)" "/usr/sbin/$t"; done
BPFDIR=/usr/lib/x86_64-linux-gnu/bpf
mkdir -p "$R$BPFDIR"
cp "$BPFDIR"/*.o "$R$BPFDIR/"
(cd "$R" && find . | "$CACHE/busybox" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -1 >"$OUT/extra.cpio.gz"
cat "$OUT/base.cpio.gz" "$OUT/extra.cpio.gz" >"$OUT/initramfs.cpio.gz"

KIMG="$OUT/vmlinux"
"$VM/extract-vmlinux.py" "$KROOT/boot/vmlinuz-$KVER" "$KIMG" >&2 || KIMG="$KROOT/boot/vmlinuz-$KVER"
LOG="$OUT/console.log"
echo "booting $KVER under TCG (console copied to stdout)" >&2
timeout --foreground -k 5 "$TIMEOUT" "$QEMU" -accel tcg,thread=multi -cpu max \
	-machine pc -m 1G -smp 2 -nodefaults -no-user-config -display none \
	-serial stdio -monitor none -no-reboot \
	-kernel "$KIMG" -initrd "$OUT/initramfs.cpio.gz" \
	-append "console=ttyS0 quiet loglevel=4 panic=-1 oops=panic" </dev/null 2>&1 |
	tr -d '\r' | tee "$LOG"
rc=$(grep -a -o -E "^FWVM-EXIT rc=[0-9]+" "$LOG" | tail -1 | cut -d= -f2)
[ -n "$rc" ] || { echo "no FWVM-EXIT line: the VM did not finish the test" >&2; exit 3; }
exit "$rc"
