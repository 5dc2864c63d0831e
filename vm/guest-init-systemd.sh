#!/bin/busybox sh
# /init for the unit test (PID 1 until switch_root): the host's root file system, read-only over
# virtio-9p under a tmpfs overlay, booted with its own systemd into fwtest.target, which runs
# /guest-test.sh (unit-test.sh) as a service and powers off. The guest kernel's modules are
# loaded here: the host has none for it.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_pci 9pnet_virtio 9p overlay veth sch_ingress cls_bpf; do modprobe $m || echo "modprobe $m failed"; done
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /lower || { echo "FWVM-EXIT rc=3 (no 9p root)"; poweroff -f; }
mount -t tmpfs -o mode=755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || { echo "FWVM-EXIT rc=3 (no overlay)"; poweroff -f; }
mkdir -p /newroot/fwtest
cp /fwtest/* /newroot/fwtest/
cp /guest-test.sh /newroot/fwtest/unit-test.sh
cat >/newroot/etc/systemd/system/fwtest.target <<'UNIT'
[Unit]
Description=fw unit test
Requires=fwtest.service
After=fwtest.service
UNIT
# Without sysinit.target: over 9p under TCG it takes a minute, and fw.service does not need it.
cat >/newroot/etc/systemd/system/fwtest.service <<'UNIT'
[Unit]
Description=fw unit test
DefaultDependencies=no
Wants=systemd-journald.socket
After=systemd-journald.socket
[Service]
Type=oneshot
ExecStart=/bin/sh /fwtest/unit-test.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
FailureAction=poweroff-force
UNIT
# A container marker in the host's root would make systemd ignore the kernel command line.
rm -f /newroot/.dockerenv /newroot/run/.containerenv
echo "FWVM-BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)s kernel=$(uname -r), switching to systemd"
umount /proc /sys /dev 2>/dev/null
exec switch_root /newroot /lib/systemd/systemd --unit=fwtest.target
