#!/bin/bash
# build-initramfs.sh KROOT FW_BINARY OUT.cpio.gz
# KROOT: a Debian linux-image .deb extracted with `dpkg-deb -x` (has boot/ and lib/modules/KVER/).
# Packs: a static busybox, fw (static, or with its shared libraries), iproute2 (ip, tc), bpftool
# (if installed), the modules in $MODULES (default veth sch_ingress cls_bpf) of that kernel with
# their dependencies, /init ($INIT_SCRIPT, default guest-init.sh), /guest-test.sh ($TEST_SCRIPT,
# default guest-test.sh) and the files in $EXTRA ("SRC=DEST SRC=DEST ...").
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${FW_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fw-vm}
KROOT=$(cd "$1" && pwd) FW=$2 OUT=$3
KVER=$(basename "$(ls -d "$KROOT"/lib/modules/*/ | head -1)")
MODULES=${MODULES:-"veth sch_ingress cls_bpf"}

R=$(mktemp -d)
trap 'rm -rf "$R"' EXIT
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,usr/local/lib,lib/x86_64-linux-gnu,lib64,proc,sys,dev,run,tmp,etc,root,var}
ln -s ../run "$R/var/run"
echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
echo "root:x:0:" >"$R/etc/group"

# A static busybox: /bin/busybox of the busybox-static package, or BUSYBOX=path (e.g. from
# `apt-get download busybox-static && dpkg-deb -x busybox-static_*.deb bb`: bb/bin/busybox).
BUSYBOX=${BUSYBOX:-$( [ -x "$CACHE/busybox" ] && echo "$CACHE/busybox" || echo /bin/busybox )}
case "$(LC_ALL=C ldd "$BUSYBOX" 2>&1 || true)" in
*"not a dynamic executable"* | *"statically linked"*) ;;
*) echo "$BUSYBOX is not a static busybox ('cargo xtask vm' puts one in the cache)" >&2; exit 1 ;;
esac
install -m755 "$(readlink -f "$BUSYBOX")" "$R/bin/busybox"

copy_with_libs() { # SRC DEST_IN_INITRAMFS
	install -D -m755 "$1" "$R$2"
	# A static binary: ldd says so and fails; there is nothing to copy.
	{ ldd "$1" 2>/dev/null || true; } | awk '/=> \//{print $3} /^[ \t]*\/lib/{print $1}' | while read -r lib; do
		[ -e "$R$lib" ] || install -D -m755 "$(readlink -f "$lib")" "$R$lib"
	done
}
copy_with_libs "$FW" /usr/local/bin/fw
copy_with_libs "$(command -v ip)" /usr/sbin/ip
copy_with_libs "$(command -v tc)" /usr/sbin/tc
if command -v bpftool >/dev/null; then copy_with_libs "$(command -v bpftool)" /usr/sbin/bpftool; fi
# The loader is looked up as /lib64/ld-linux-x86-64.so.2 (copied above via ldd).

# Kernel modules (+ dependencies), decompressed so busybox insmod/modprobe can load them.
MODDIR="$KROOT/lib/modules/$KVER"
[ -f "$MODDIR/modules.dep" ] || depmod -b "$KROOT" "$KVER"
for m in $MODULES; do
	if grep -q -E "/$m\.ko(\.[a-z]+)?$" "$MODDIR/modules.builtin" 2>/dev/null; then continue; fi
	modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
done | sort -u | while read -r ko; do
	rel=${ko#"$MODDIR"/}
	dest="$R/lib/modules/$KVER/${rel%.xz}"; dest=${dest%.zst}; dest=${dest%.gz}
	mkdir -p "$(dirname "$dest")"
	case "$ko" in
	*.xz) xz -dc "$ko" >"$dest" ;;
	*.zst) zstd -qdc "$ko" >"$dest" ;;
	*.gz) gzip -dc "$ko" >"$dest" ;;
	*) cp "$ko" "$dest" ;;
	esac
done
cp "$MODDIR"/modules.builtin* "$MODDIR/modules.order" "$R/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$R" "$KVER"

install -m755 "${INIT_SCRIPT:-$HERE/guest-init.sh}" "$R/init"
install -m755 "${TEST_SCRIPT:-$HERE/guest-test.sh}" "$R/guest-test.sh"
for pair in ${EXTRA:-}; do
	install -D -m755 "${pair%%=*}" "$R${pair#*=}"
done

mkdir -p "$(dirname "$OUT")"
# busybox-static provides cpio -o; GNU cpio works too.
(cd "$R" && find . | "$R/bin/busybox" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -1 >"$OUT"
echo "initramfs: $OUT ($(du -h "$OUT" | cut -f1), kernel $KVER, modules: $(cd "$R/lib/modules/$KVER" && find . -name '*.ko' | xargs -n1 basename | tr '\n' ' '))"
