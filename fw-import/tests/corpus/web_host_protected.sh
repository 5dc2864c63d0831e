#!/bin/bash
# iptables script: only open 22 and 80
iptables -F
iptables -X
iptables -Z

modprobe ip_tables
modprobe iptable_nat
modprobe ip_conntrack

iptables -P INPUT DROP
iptables -P FORWARD ACCEPT
iptables -P OUTPUT ACCEPT

iptables -A INPUT -i lo -j ACCEPT
iptables -A OUTPUT -o lo -j ACCEPT

iptables -A INPUT -p tcp -m multiport --dports 22,80 -j ACCEPT
iptables -A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT

# check the result
iptables -nvL
