#!/bin/sh
# guest-test.sh - fw's test on another kernel, run by /init inside the VM (busybox sh).
#
# veth0 10.11.0.1 (root namespace, filtered by fw)  <->  veth1 10.11.0.2 (namespace "peer").
# The filtered side listens on tcp/22 (open in both policies), tcp/80 (open in the seed policy,
# closed by the replacement) and tcp/8080 (the other way round); tcp/23 has no listener. The
# peer listens on tcp/9000 for the host's own connections, whose replies come back only if the
# egress recorder works.
#
# Steps: baseline (no filter), fw up (seed policy), traffic, fw status, fw conns, fw up --policy
# (the atomic replace path), traffic, fw down, traffic. Every check prints one line
# `FWVM-CHECK ok|FAIL <what>: <result>`; the last line is `FWVM-SUMMARY`. Exit status 0 only if
# every check passed.

FW=${FW:-/usr/local/bin/fw}
BB=${BB:-busybox}
IF=veth0 PEER=veth1 NS=peer H=10.11.0.1 P=10.11.0.2
FAILS=0 CHECKS=0
# busybox sh runs its own `ip` applet before $PATH, and that one cannot create veths.
ip() { /usr/sbin/ip "$@"; }

check() { # check WHAT WANT GOT
	CHECKS=$((CHECKS + 1))
	if [ "$2" = "$3" ]; then
		echo "FWVM-CHECK ok   $1: $3"
	else
		echo "FWVM-CHECK FAIL $1: want $2, got $3"
		FAILS=$((FAILS + 1))
	fi
}
run() { # run CMD...: echo it, its output and its exit status (in $rc)
	echo "+ $*"
	"$@" 2>&1
	rc=$?
	echo "[rc=$rc]"
}
inpeer() { ip netns exec "$NS" "$@"; }

tcp() { # tcp [inpeer] HOST PORT -> OPEN | REFUSED | DROPPED
	out=$("$@" 2>&1 </dev/null)
	if [ $? = 0 ]; then
		echo OPEN
	elif echo "$out" | grep -q -i refused; then
		echo REFUSED
	else
		echo DROPPED
	fi
}
tcp_in() { tcp inpeer $BB timeout 6 $BB nc -w 2 "$H" "$1"; }
tcp_out() { tcp $BB timeout 6 $BB nc -w 2 "$P" 9000; }
ping_in() { if inpeer $BB ping -c 1 -W 2 "$H" >/dev/null 2>&1; then echo REPLY; else echo NONE; fi; }
ping_out() { if $BB ping -c 1 -W 2 "$P" >/dev/null 2>&1; then echo REPLY; else echo NONE; fi; }

xdp_link() { # "LINK_ID PROG_ID" of the XDP link, if bpftool is here
	command -v bpftool >/dev/null && bpftool link show | awk '$2 == "xdp" {print $1 $4; exit}' | tr ':' ' '
}
has() { if echo "$out" | grep -q -F "$1"; then echo yes; else echo no; fi; }
pins() { find /sys/fs/bpf/fw -type f 2>/dev/null | wc -l; }

topology() {
	for m in veth sch_ingress cls_bpf; do modprobe $m 2>/dev/null; done
	ip link add $IF type veth peer name $PEER || { echo "cannot create veth"; exit 2; }
	ip netns add $NS
	ip link set $PEER netns $NS
	ip addr add $H/24 dev $IF
	ip link set $IF up
	inpeer /usr/sbin/ip addr add $P/24 dev $PEER
	inpeer /usr/sbin/ip link set $PEER up
	inpeer /usr/sbin/ip link set lo up
	# -ll keeps listening; -e true closes each connection at once (the client sees EOF, rc 0).
	for port in 22 80 8080; do $BB nc -ll -p $port -e /bin/true & done
	inpeer $BB nc -ll -p 9000 -e /bin/true &
	sleep 1
}

baseline() { # baseline LABEL: nothing filtered
	check "$1: tcp/8080 in" OPEN "$(tcp_in 8080)"
	check "$1: tcp/23 in (no listener)" REFUSED "$(tcp_in 23)"
	check "$1: ping in" REPLY "$(ping_in)"
}

seed_filtered() { # the seed policy: 22 and 80 open, everything else in dropped, replies come back
	check "seed: tcp/22 in (allowed)" OPEN "$(tcp_in 22)"
	check "seed: tcp/80 in (allowed)" OPEN "$(tcp_in 80)"
	check "seed: tcp/8080 in (listener, not allowed)" DROPPED "$(tcp_in 8080)"
	check "seed: tcp/23 in (no listener)" DROPPED "$(tcp_in 23)"
	check "seed: ping in" NONE "$(ping_in)"
	check "seed: tcp out to the peer (reply via egress state)" OPEN "$(tcp_out)"
	check "seed: ping out (reply via egress state)" REPLY "$(ping_out)"
}

replaced_filtered() { # the replacement policy: 22 and 8080 open
	check "replaced: tcp/8080 in (allowed now)" OPEN "$(tcp_in 8080)"
	check "replaced: tcp/80 in (closed now)" DROPPED "$(tcp_in 80)"
	check "replaced: tcp/22 in (still allowed)" OPEN "$(tcp_in 22)"
	check "replaced: tcp out to the peer (reply via egress state)" OPEN "$(tcp_out)"
}

inspect() {
	ip -d link show dev $IF | grep -E "xdp|prog/" | head -4
	if command -v bpftool >/dev/null; then run bpftool link show; fi
	find /sys/fs/bpf/fw /run/fw 2>/dev/null | sed 's/^/  /'
}

echo "===== environment: $(uname -r)"
run $FW --version
topology
baseline before

echo "===== fw up --iface $IF (seed policy)"
run $BB timeout 120 $FW up --iface $IF
UP=$rc
check "fw up" 0 $UP
inspect
if [ $UP = 0 ]; then
	seed_filtered
	out=$($BB timeout 60 $FW status --iface $IF 2>&1)
	check "fw status" 0 $?
	echo "$out"
	check "fw status names the interface" yes "$(has "on $IF")"
	# A connection held open (a closed one leaves the tables at once): the peer echoes, the
	# host's side stays up for a few seconds.
	inpeer $BB nc -l -p 9001 -e /bin/cat &
	sleep 1
	($BB sleep 6 | $BB nc "$P" 9001 >/dev/null 2>&1) &
	sleep 1
	out=$($BB timeout 60 $FW conns --iface $IF 2>&1)
	echo "$out"
	check "fw conns lists the open outgoing connection" yes "$(has "$P:9001")"

	echo "===== fw up --iface $IF --policy /tmp/replace.toml (atomic replace)"
	printf '[[allow]]\nports = [22, 8080]\ncomment = "replacement"\n' >/tmp/replace.toml
	before=$(xdp_link)
	run $BB timeout 120 $FW up --iface $IF --policy /tmp/replace.toml
	check "fw up --policy (replace)" 0 $rc
	inspect
	after=$(xdp_link)
	if [ -n "$before" ]; then
		# bpf_link_update: the same link, a new program.
		check "replace kept the XDP link" "${before%% *}" "${after%% *}"
		check "replace loaded a new program" yes "$([ "$before" != "$after" ] && echo yes || echo no)"
	fi
	replaced_filtered
else
	echo "----- dmesg (bpf, verifier)"
	dmesg | grep -i -E "bpf|xdp|verif" | tail -10
	check "a failed fw up leaves no pins" 0 "$(pins)"
fi

echo "===== fw down --iface $IF"
run $BB timeout 60 $FW down --iface $IF
# After a failed fw up there is nothing to take down; after a good one, down must succeed.
[ $UP != 0 ] || check "fw down" 0 $rc
check "no pins after fw down" 0 "$(pins)"
check "no egress filter after fw down" 0 "$(/usr/sbin/tc filter show dev $IF egress | wc -l)"
baseline after

echo "FWVM-SUMMARY kernel=$(uname -r) checks=$CHECKS failed=$FAILS"
[ $FAILS = 0 ]
