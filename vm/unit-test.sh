#!/bin/sh
# unit-test.sh - fw.service under a real systemd (PID 1), run as a service inside the VM that
# guest-init-systemd.sh boots (the host's root file system under a tmpfs overlay). Installs the
# .deb, then: start, reload (the saved policy again, atomically: same link, new program),
# restart (same link: no window),
# stop (the filter stays), and a start with bpffs unmounted (the unit mounts it on the host, so
# the pins outlive the unit's sandbox). Every check prints `FWVM-CHECK ok|FAIL what: result`;
# the last lines are FWVM-SUMMARY and FWVM-EXIT.

BB=/fwtest/busybox
IF=veth0 PEER=veth1 NS=peer H=10.11.0.1 P=10.11.0.2
FAILS=0 CHECKS=0
export SYSTEMD_PAGER= SYSTEMD_COLORS=0

check() { # check WHAT WANT GOT
	CHECKS=$((CHECKS + 1))
	if [ "$2" = "$3" ]; then
		echo "FWVM-CHECK ok   $1: $3"
	else
		echo "FWVM-CHECK FAIL $1: want $2, got $3"
		FAILS=$((FAILS + 1))
	fi
}
run() { echo "+ $*"; "$@" 2>&1; rc=$?; echo "[rc=$rc]"; }
tcp_in() { # OPEN | REFUSED | DROPPED, from the peer
	out=$(ip netns exec $NS $BB timeout 6 $BB nc -w 2 "$H" "$1" 2>&1 </dev/null)
	if [ $? = 0 ]; then echo OPEN; elif echo "$out" | grep -q -i refused; then echo REFUSED; else echo DROPPED; fi
}
xdp_link() { bpftool link show | awk '$2 == "xdp" {print $1 $4; exit}' | tr ':' ' '; }
pins() { find /sys/fs/bpf/fw -name link -type f 2>/dev/null | wc -l; }
state() { systemctl show -P ActiveState fw.service; }
finish() {
	echo "----- journalctl -u fw"
	journalctl -u fw.service --no-pager -o cat | tail -20
	echo "FWVM-SUMMARY kernel=$(uname -r) checks=$CHECKS failed=$FAILS"
	echo "FWVM-EXIT rc=$([ $FAILS = 0 ] && echo 0 || echo 1) uptime=$(cut -d' ' -f1 /proc/uptime)s"
	# At once (-ff: no unit is stopped); SuccessAction= did not power off reliably here.
	sync
	systemctl --force --force poweroff
	exit 1
}

echo "===== systemd $(systemctl --version | head -1 | cut -d' ' -f2) up after $(cut -d' ' -f1 /proc/uptime)s"
ip link add $IF type veth peer name $PEER
ip netns add $NS
ip link set $PEER netns $NS
ip addr add $H/24 dev $IF
ip link set $IF up
ip netns exec $NS ip addr add $P/24 dev $PEER
ip netns exec $NS ip link set $PEER up
for port in 22 8080; do $BB nc -ll -p $port -e /bin/true & done
sleep 1
check "before: tcp/8080 in" OPEN "$(tcp_in 8080)"

echo "===== dpkg -i"
rm -f /var/lib/man-db/auto-update # no man-db index rebuild under TCG
run dpkg -i /fwtest/fw.deb
check "dpkg -i" 0 $rc
check "the package enabled nothing" disabled "$(systemctl is-enabled fw.service 2>&1)"
check "the package started nothing" inactive "$(state)"
check "the package attached nothing" 0 "$(pins)"
[ $rc = 0 ] || finish

echo "===== fw up, fw save, fw down: /etc/fw/fw.toml names $IF"
run /usr/sbin/fw up --iface $IF
run /usr/sbin/fw save
run /usr/sbin/fw down --iface $IF
check "saved interfaces" "interfaces = [\"$IF\"]" "$(grep '^interfaces' /etc/fw/fw.toml)"

echo "===== systemctl start fw"
run systemctl start fw.service
check "start" 0 $rc
check "active after start" active "$(state)"
check "tcp/8080 in after start" DROPPED "$(tcp_in 8080)"
check "tcp/22 in after start" OPEN "$(tcp_in 22)"
L1=$(xdp_link)
echo "xdp link, program: $L1"

echo "===== fw allow 8080/tcp (live), then systemctl reload fw: the saved policy again"
run /usr/sbin/fw allow 8080/tcp --iface $IF
check "tcp/8080 in after fw allow" OPEN "$(tcp_in 8080)"
run systemctl reload fw.service
check "reload" 0 $rc
check "tcp/8080 in after reload (the saved policy)" DROPPED "$(tcp_in 8080)"
L2=$(xdp_link)
check "reload kept the link" "${L1%% *}" "${L2%% *}"
check "reload loaded a new program" yes "$([ -n "$L1" ] && [ "$L1" != "$L2" ] && echo yes || echo no)"

echo "===== systemctl restart fw"
run systemctl restart fw.service
check "restart" 0 $rc
L3=$(xdp_link)
check "restart kept the link (never detached)" "${L1%% *}" "${L3%% *}"
check "tcp/8080 in after restart" DROPPED "$(tcp_in 8080)"

echo "===== systemctl stop fw"
run systemctl stop fw.service
check "inactive after stop" inactive "$(state)"
check "stop left the filter attached" 1 "$(pins)"
check "tcp/8080 in after stop" DROPPED "$(tcp_in 8080)"

echo "===== fw down, umount /sys/fs/bpf, systemctl start fw (bpffs as on a boot without it)"
run /usr/sbin/fw down --iface $IF
umount /sys/fs/bpf
check "bpffs unmounted" no "$(findmnt -n -t bpf -M /sys/fs/bpf >/dev/null && echo yes || echo no)"
run systemctl start fw.service
check "start without bpffs" 0 $rc
check "the unit mounted bpffs on the host" yes "$(findmnt -n -t bpf -M /sys/fs/bpf >/dev/null && echo yes || echo no)"
check "pins outlive the unit's sandbox" 1 "$(pins)"
check "tcp/8080 in after that start" DROPPED "$(tcp_in 8080)"

echo "===== systemd-analyze security fw.service"
systemd-analyze security --no-pager fw.service 2>&1 | tail -1
finish
