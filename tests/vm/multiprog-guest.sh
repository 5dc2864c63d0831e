#!/bin/sh
# multiprog-guest.sh - runs as root inside the test VM (busybox sh): fw and xdp-filter on one
# interface through the libxdp dispatcher, in both orders.
# Topology: veth0 10.11.0.1 (root netns: fw and xdp-filter)  <->  veth1 10.11.0.2 (netns "peer").
# Listeners on tcp/22, tcp/80, tcp/8081. fw's policy allows 22 and 80; xdp-filter drops 80.
# So: 22 passes both; 80 is dropped by xdp-filter although fw allows it; 8081 is dropped by fw
# although xdp-filter passes it. Each check prints FWVM-CHECK ok/FAIL; the exit status is 0
# only if all passed.

FW=${FW:-/usr/local/bin/fw}
BB=${BB:-busybox}
IF=veth0 PEER=veth1 NS=peer H=10.11.0.1
FAILS=0
if [ -x /usr/sbin/ip ]; then ip() { /usr/sbin/ip "$@"; }; fi
note() { echo "FWVM-CHECK $*"; }
expect() { # expect NAME WANT GOT
	if [ "$2" = "$3" ]; then note "ok   $1: $3"; else note "FAIL $1: want $2, got $3"; FAILS=$((FAILS + 1)); fi
}
contains() { # contains NAME NEEDLE TEXT
	case "$3" in *"$2"*) note "ok   $1" ;; *) note "FAIL $1: no '$2' in: $3"; FAILS=$((FAILS + 1)) ;; esac
}
run() { echo "+ $*"; out=$("$@" 2>&1); rc=$?; echo "$out"; echo "[rc=$rc]"; return $rc; }
inpeer() { ip netns exec "$NS" "$@"; }
tcp_in() {
	out=$(inpeer $BB timeout 6 $BB nc -w 2 "$H" "$1" </dev/null 2>&1)
	rc=$?
	if [ $rc = 0 ]; then echo OPEN; elif echo "$out" | grep -q -i refused; then echo REFUSED; else echo DROPPED; fi
}
probes() { # probes LABEL WANT22 WANT80 WANT8081
	expect "$1 tcp/22" "$2" "$(tcp_in 22)"
	expect "$1 tcp/80" "$3" "$(tcp_in 80)"
	expect "$1 tcp/8081" "$4" "$(tcp_in 8081)"
}
programs() { # the program names xdp-loader lists on $IF, in order
	xdp-loader status $IF 2>/dev/null | awk '/^ *=>/{print $3}' | tr '\n' ' '
}
dispatchers() { ls -d /sys/fs/bpf/xdp/dispatch-* 2>/dev/null | wc -l; }

echo "===== environment"
uname -a
modprobe veth; modprobe sch_ingress; modprobe cls_bpf
ip link add $IF type veth peer name $PEER || { echo "cannot create veth"; exit 2; }
ip netns add $NS
ip link set $PEER netns $NS
ip addr add $H/24 dev $IF && ip link set $IF up
inpeer ip addr add 10.11.0.2/24 dev $PEER
inpeer ip link set $PEER up
inpeer ip link set lo up
for p in 22 80 8081; do $BB nc -ll -p $p -e /bin/true & done
printf '[[allow]]\nports = [22, 80]\ncomment = "ssh and web"\n' >/policy.toml
sleep 1
probes baseline OPEN OPEN OPEN

echo "===== A: xdp-filter first, then fw joins its dispatcher"
run xdp-filter load $IF --mode native
expect "A xdp-filter load rc" 0 $rc
run xdp-filter port 80
probes "A xdp-filter alone" OPEN DROPPED OPEN
run $FW up --iface $IF --policy /policy.toml --force
expect "A fw up rc" 0 $rc
contains "A fw up says it joined a dispatcher" "libxdp dispatcher" "$out"
run xdp-loader status $IF
expect "A programs in the dispatcher" "xdpfilt_alw_all fw_xdp " "$(programs)"
probes "A both" OPEN DROPPED DROPPED
run $FW status --iface $IF
expect "A fw status rc" 0 $rc
contains "A fw status shows the dispatcher" "program 2 of 2 at priority 20" "$out"
filt_id=$(xdp-loader status $IF | awk '/xdpfilt_alw_all/{print $4}')
run $FW up --iface $IF
expect "A fw up (upgrade) rc" 0 $rc
expect "A xdp-filter's program kept across fw's upgrade" "$filt_id" "$(xdp-loader status $IF | awk '/xdpfilt_alw_all/{print $4}')"
probes "A after fw upgrade" OPEN DROPPED DROPPED
run $FW up --iface $IF --priority 5
expect "A fw up --priority 5 rc" 0 $rc
expect "A fw runs first at priority 5" "fw_xdp xdpfilt_alw_all " "$(programs)"
probes "A reordered" OPEN DROPPED DROPPED
expect "A one dispatcher pinned" 1 "$(dispatchers)"
run $FW down --iface $IF
expect "A fw down rc" 0 $rc
expect "A only xdp-filter left" "xdpfilt_alw_all " "$(programs)"
probes "A xdp-filter after fw down" OPEN DROPPED OPEN
run xdp-filter unload $IF
probes "A nothing" OPEN OPEN OPEN
expect "A no dispatcher pinned" 0 "$(dispatchers)"

echo "===== B: fw first (--multiprog creates the dispatcher), then xdp-filter joins"
run $FW up --iface $IF --policy /policy.toml --force --multiprog
expect "B fw up --multiprog rc" 0 $rc
run xdp-loader status $IF
expect "B fw alone in a dispatcher" "fw_xdp " "$(programs)"
probes "B fw alone" OPEN OPEN DROPPED
run xdp-filter load $IF --mode native
expect "B xdp-filter load rc" 0 $rc
run xdp-filter port 80
expect "B programs in the dispatcher" "xdpfilt_alw_all fw_xdp " "$(programs)"
probes "B both" OPEN DROPPED DROPPED
run $FW status --iface $IF
expect "B fw status rc (fw's program found in the new dispatcher)" 0 $rc
run xdp-filter unload $IF
expect "B xdp-filter unload rc" 0 $rc
expect "B fw left alone in the dispatcher" "fw_xdp " "$(programs)"
probes "B fw after xdp-filter left" OPEN OPEN DROPPED
run $FW down --iface $IF
expect "B fw down rc" 0 $rc
probes "B nothing" OPEN OPEN OPEN
expect "B no dispatcher pinned" 0 "$(dispatchers)"
expect "B no fw pins" 0 "$(find /sys/fs/bpf/fw -type f 2>/dev/null | wc -l)"
expect "B no XDP program on $IF" "" "$(ip -d link show dev $IF | grep -o 'prog/xdp id [0-9]*')"

echo "FWVM-SUMMARY kernel=$(uname -r) fails=$FAILS"
[ $FAILS = 0 ]
