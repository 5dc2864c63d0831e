#!/bin/sh
# A server firewall with variables, a loop and a chain for SSH admins.
IPT=/sbin/iptables
ADMINS="192.0.2.10 192.0.2.11"
TCP_SERVICES="25 80 443"
SSH_PORT=22

echo 1 > /proc/sys/net/ipv4/tcp_syncookies
sysctl -w net.ipv4.conf.all.rp_filter=1

$IPT -F
$IPT -X
$IPT -P INPUT DROP
$IPT -P FORWARD DROP
$IPT -P OUTPUT ACCEPT

$IPT -A INPUT -i lo -j ACCEPT
$IPT -A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT

for port in $TCP_SERVICES; do
    $IPT -A INPUT -p tcp --dport $port -j ACCEPT
done

$IPT -N SSH-ADMINS
for ip in $ADMINS; do
    $IPT -A SSH-ADMINS -s $ip -j ACCEPT
done
$IPT -A SSH-ADMINS -j RETURN
$IPT -A INPUT -p tcp --dport ${SSH_PORT} -j SSH-ADMINS

if [ -x /usr/sbin/netfilter-persistent ]; then
    netfilter-persistent save
fi
