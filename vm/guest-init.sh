#!/bin/busybox sh
# /init of the test initramfs (PID 1). Mounts the basics, runs /guest-test.sh, powers off.
/bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
ip link set lo up
echo "FWVM-BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)s kernel=$(uname -r)"
sh /guest-test.sh
rc=$?
echo "FWVM-EXIT rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)s"
sync
poweroff -f
# If poweroff failed, exiting PID 1 panics the kernel; with panic=-1 and -no-reboot QEMU exits.
exit $rc
