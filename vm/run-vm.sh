#!/bin/bash
# run-vm.sh KROOT FW_BINARY   - boot KROOT's kernel with the fw test initramfs, print the console,
# exit with the guest test's status (0 = fw works), 3 = no result line (boot/VM failure).
# Env: ACCEL=auto|kvm|tcg (auto: kvm only on a real VMX/SVM KVM; a /dev/kvm provided by
#      kvm_pvm, as on these VMs, cannot run stock kernels), BOOT=auto|pvh|bzimage (auto: pvh when the
#      kernel has CONFIG_PVH=y: boot the extracted ELF vmlinux, ~4 s faster under TCG),
#      MEM=1G, SMP=2, TIMEOUT=300 (s), OUTDIR, TEST_SCRIPT (default: guest-test.sh),
#      QEMU (default: qemu-system-x86_64 on PATH), QEMU_ARGS (more QEMU arguments, split on
#      spaces), APPEND (more kernel command line). INIT_SCRIPT, MODULES, EXTRA: build-initramfs.sh.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${FW_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fw-vm}
KROOT=$(cd "$1" && pwd) FW=$(readlink -f "$2")
KVER=$(basename "$(ls -d "$KROOT"/lib/modules/*/ | head -1)")
VMLINUZ="$KROOT/boot/vmlinuz-$KVER"
OUTDIR=${OUTDIR:-$CACHE/out/$KVER}
ACCEL=${ACCEL:-auto} BOOT=${BOOT:-auto} MEM=${MEM:-1G} SMP=${SMP:-2} TIMEOUT=${TIMEOUT:-300}
mkdir -p "$OUTDIR"

if [ "$BOOT" = auto ]; then
	grep -q "^CONFIG_PVH=y" "$KROOT/boot/config-$KVER" && BOOT=pvh || BOOT=bzimage
fi
if [ "$BOOT" = pvh ]; then
	KIMG="$OUTDIR/vmlinux"
	if [ ! "$KIMG" -nt "$VMLINUZ" ] && ! "$HERE/extract-vmlinux.py" "$VMLINUZ" "$KIMG"; then
		echo "falling back to booting the bzImage" >&2
		BOOT=bzimage KIMG=$VMLINUZ
	fi
else
	KIMG=$VMLINUZ
fi

"$HERE/build-initramfs.sh" "$KROOT" "$FW" "$OUTDIR/initramfs.cpio.gz" || exit 3

if [ "$ACCEL" = auto ]; then
	if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && grep -q -w -E "vmx|svm" /proc/cpuinfo; then
		ACCEL=kvm
	else
		ACCEL=tcg
	fi
fi
case "$ACCEL" in
kvm) ACCEL_OPTS=(-accel kvm -cpu host) ;;
tcg) ACCEL_OPTS=(-accel tcg,thread=multi -cpu max) ;;
*) echo "ACCEL must be auto, kvm or tcg" >&2; exit 2 ;;
esac

LOG="$OUTDIR/console.log"
echo "booting $KVER ($BOOT) with $ACCEL, -m $MEM -smp $SMP (console: $LOG)"
start=$(date +%s%N)
timeout --foreground -k 5 "$TIMEOUT" "${QEMU:-qemu-system-x86_64}" "${ACCEL_OPTS[@]}" \
	-machine pc -m "$MEM" -smp "$SMP" -nodefaults -no-user-config -display none \
	-serial stdio -monitor none -no-reboot ${QEMU_ARGS:-} \
	-kernel "$KIMG" -initrd "$OUTDIR/initramfs.cpio.gz" \
	-append "console=ttyS0 quiet loglevel=4 panic=-1 oops=panic${APPEND:+ $APPEND}" </dev/null 2>&1 |
	tr -d '\r' | tee "$LOG"
qrc=${PIPESTATUS[0]}
end=$(date +%s%N)
echo "qemu exit=$qrc, wall time $(awk "BEGIN{printf \"%.1f\", ($end - $start) / 1e9}")s" | tee -a "$LOG"
rc=$(grep -a -o -E "^FWVM-EXIT rc=[0-9]+" "$LOG" | tail -1 | cut -d= -f2)
[ -n "$rc" ] || { echo "no FWVM-EXIT line: the VM did not finish the test" >&2; exit 3; }
exit "$rc"
