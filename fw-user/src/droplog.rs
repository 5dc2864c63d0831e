//! Ring-buffer records decoded into events: what the XDP program saw and decided, parsed by the
//! same `fw_common::parse` it ran (on the bytes it copied), with filters, text and JSON lines for
//! `fw log`, and the iptables-LOG-like line `fw serve` sends to syslog.

use std::net::IpAddr;

use fw_common::{
    Family, L4, Parsed, Reason,
    maps::slot_rule,
    obs::{RECORD_HEADER_LEN, RecordHeader},
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    tcp::FLAG_NAMES,
};
use fw_policy::Cidr;
use serde::Serialize;

/// Version of the `--json` shape of `fw log` lines (and of `fw capture`'s packet lines).
pub const LOG_SCHEMA: u32 = 1;

/// A frame as far as the record holds it: header lengths are checked against the length on
/// the wire, reads against the bytes copied — as the kernel's parser saw the frame.
struct Snapshot<'a> {
    bytes: &'a [u8],
    wire_len: usize,
}

impl fw_common::PacketView for Snapshot<'_> {
    fn len(&self) -> usize {
        self.wire_len
    }

    fn bytes<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        self.bytes.get(off..off.checked_add(N)?)?.try_into().ok()
    }
}

/// One observed packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PacketEvent {
    pub schema: u32,
    /// RFC 3339, UTC, microseconds.
    pub time: String,
    #[serde(skip)]
    pub unix_ns: u64,
    pub iface: String,
    /// "drop" or "pass".
    pub verdict: &'static str,
    /// The reason's name, or "rule" when an allow rule let it in.
    pub reason: &'static str,
    /// The allow rule's id (with reason "rule").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// TCP flags as letters (FSRPAUEC), e.g. "S", "SA", "FPU".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// Ethertype of a frame that is not IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ethertype: Option<u16>,
    /// Length on the wire.
    pub len: u32,
}

/// A ring-buffer record split into its header and the frame bytes it carries.
pub fn split(record: &[u8]) -> Option<(RecordHeader, &[u8])> {
    let h: RecordHeader = bytemuck::pod_read_unaligned(record.get(..RECORD_HEADER_LEN)?);
    let data = record.get(RECORD_HEADER_LEN..)?;
    let n = usize::from(h.caplen).min(data.len());
    Some((h, &data[..n]))
}

pub fn flag_letters(flags: u8) -> String {
    let s: String = FLAG_NAMES
        .iter()
        .filter(|(f, _, _)| flags & f != 0)
        .map(|(_, _, c)| *c)
        .collect();
    if s.is_empty() { "none".into() } else { s }
}

fn proto_name(p: u8) -> String {
    match p {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        IPPROTO_ICMP => "icmp".into(),
        IPPROTO_ICMPV6 => "icmpv6".into(),
        n => n.to_string(),
    }
}

fn addr(family: Family, a: &[u8; 16]) -> IpAddr {
    match family {
        Family::V4 => IpAddr::from([a[0], a[1], a[2], a[3]]),
        Family::V6 => IpAddr::from(*a),
    }
}

/// Decode one record. `boot_to_unix_ns` converts CLOCK_MONOTONIC to the wall clock.
pub fn decode(h: &RecordHeader, data: &[u8], iface: &str, boot_to_unix_ns: i128) -> PacketEvent {
    let (reason, rule) = match Reason::from_slot(h.slot) {
        Some(r) => (r.name(), None),
        None => ("rule", slot_rule(h.slot).map(|(_, id)| id)),
    };
    let unix_ns = (i128::from(h.ts_ns) + boot_to_unix_ns).max(0) as u64;
    let mut e = PacketEvent {
        schema: LOG_SCHEMA,
        time: rfc3339(unix_ns),
        unix_ns,
        iface: iface.to_string(),
        verdict: if h.pass != 0 { "pass" } else { "drop" },
        reason,
        rule,
        family: None,
        proto: None,
        src: None,
        dst: None,
        sport: None,
        dport: None,
        tcp_flags: None,
        icmp_type: None,
        icmp_code: None,
        ethertype: None,
        len: h.len,
    };
    let snap = Snapshot {
        bytes: data,
        wire_len: h.len as usize,
    };
    match fw_common::parse(&snap) {
        Ok(Parsed::NonIp { ethertype }) => e.ethertype = Some(ethertype),
        Ok(Parsed::Ip(ip)) => fill_ip(&mut e, &ip),
        Err(_) => fill_partial(&mut e, data),
    }
    e
}

fn fill_ip(e: &mut PacketEvent, ip: &fw_common::Ip) {
    e.family = Some(match ip.family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    });
    e.proto = Some(proto_name(ip.proto));
    e.src = Some(addr(ip.family, &ip.src));
    e.dst = Some(addr(ip.family, &ip.dst));
    match ip.l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
            ..
        } => {
            e.sport = Some(sport);
            e.dport = Some(dport);
            e.tcp_flags = Some(flag_letters(flags));
        }
        L4::Udp { sport, dport } => {
            e.sport = Some(sport);
            e.dport = Some(dport);
        }
        L4::Icmp { ty, code, .. } => {
            e.icmp_type = Some(ty);
            e.icmp_code = Some(code);
        }
        L4::None => {}
    }
}

/// A frame the parser refused (that is why it was dropped): show the addresses of a plain IPv4
/// or IPv6 header when the bytes hold one, so the sender can still be named.
fn fill_partial(e: &mut PacketEvent, data: &[u8]) {
    let Some(et) = data.get(12..14) else {
        return;
    };
    match u16::from_be_bytes([et[0], et[1]]) {
        0x0800 if data.len() >= 34 && data[14] >> 4 == 4 => {
            e.family = Some("ipv4");
            e.proto = Some(proto_name(data[23]));
            e.src = Some(IpAddr::from([data[26], data[27], data[28], data[29]]));
            e.dst = Some(IpAddr::from([data[30], data[31], data[32], data[33]]));
        }
        0x86dd if data.len() >= 54 && data[14] >> 4 == 6 => {
            let a = |o: usize| -> [u8; 16] { data[o..o + 16].try_into().unwrap_or([0; 16]) };
            e.family = Some("ipv6");
            e.proto = Some(proto_name(data[20]));
            e.src = Some(IpAddr::from(a(22)));
            e.dst = Some(IpAddr::from(a(38)));
        }
        _ => {}
    }
}

/// What `fw log` / `fw capture` keep.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Reason names (empty: any).
    pub reasons: Vec<String>,
    /// Destination or source port.
    pub port: Option<u16>,
    /// Source address range.
    pub from: Option<Cidr>,
}

impl Filter {
    pub fn matches(&self, e: &PacketEvent) -> bool {
        if !self.reasons.is_empty() && !self.reasons.iter().any(|r| r == e.reason) {
            return false;
        }
        if let Some(p) = self.port
            && e.dport != Some(p)
            && e.sport != Some(p)
        {
            return false;
        }
        if let Some(c) = &self.from
            && !e.src.is_some_and(|a| c.contains(&a))
        {
            return false;
        }
        true
    }
}

fn endpoint(a: Option<IpAddr>, p: Option<u16>) -> String {
    match (a, p) {
        (Some(IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        (None, _) => "?".into(),
    }
}

/// `fw log`'s text line.
pub fn text_line(e: &PacketEvent) -> String {
    let mut s = format!(
        "{} {} {} {}",
        e.time,
        e.iface,
        e.verdict.to_uppercase(),
        match e.rule {
            Some(id) => format!("rule {id}"),
            None => e.reason.to_string(),
        }
    );
    if let Some(et) = e.ethertype {
        s.push_str(&format!(" ethertype 0x{et:04x}"));
    } else if e.family.is_some() {
        s.push_str(&format!(
            " {} {} > {}",
            e.proto.as_deref().unwrap_or("?"),
            endpoint(e.src, e.sport),
            endpoint(e.dst, e.dport)
        ));
    }
    if let Some(f) = &e.tcp_flags {
        s.push_str(&format!(" flags {f}"));
    }
    if let (Some(t), Some(c)) = (e.icmp_type, e.icmp_code) {
        s.push_str(&format!(" type {t} code {c}"));
    }
    s.push_str(&format!(" len {}", e.len));
    s
}

/// The syslog message: key=value like the kernel's iptables LOG target, so the same greps and
/// log parsers work.
pub fn syslog_line(e: &PacketEvent) -> String {
    let mut s = format!(
        "{} reason={} IN={}",
        e.verdict.to_uppercase(),
        e.reason,
        e.iface
    );
    if let Some(id) = e.rule {
        s.push_str(&format!(" RULE={id}"));
    }
    if let Some(a) = e.src {
        s.push_str(&format!(" SRC={a}"));
    }
    if let Some(a) = e.dst {
        s.push_str(&format!(" DST={a}"));
    }
    s.push_str(&format!(" LEN={}", e.len));
    if let Some(p) = &e.proto {
        s.push_str(&format!(" PROTO={}", p.to_uppercase()));
    }
    if let Some(p) = e.sport {
        s.push_str(&format!(" SPT={p}"));
    }
    if let Some(p) = e.dport {
        s.push_str(&format!(" DPT={p}"));
    }
    if let Some(f) = &e.tcp_flags {
        s.push_str(&format!(" FLAGS={f}"));
    }
    if let (Some(t), Some(c)) = (e.icmp_type, e.icmp_code) {
        s.push_str(&format!(" TYPE={t} CODE={c}"));
    }
    if let Some(et) = e.ethertype {
        s.push_str(&format!(" ETHERTYPE=0x{et:04x}"));
    }
    s
}

/// Nanoseconds to add to CLOCK_MONOTONIC (bpf_ktime_get_ns) for the Unix time.
pub fn boot_to_unix_ns() -> i128 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid timespec pointer.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

/// Unix nanoseconds as RFC 3339 UTC with microseconds.
pub fn rfc3339(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let micros = (unix_ns % 1_000_000_000) / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use fw_common::frame::PacketSpec;

    fn header(slot: u32, len: usize, caplen: usize) -> RecordHeader {
        RecordHeader {
            ts_ns: 1_000,
            slot,
            ifindex: 2,
            len: len as u32,
            caplen: caplen as u16,
            ..Default::default()
        }
    }

    #[test]
    fn rfc3339_formats_a_known_instant() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_796_615_219_123_456_789),
            "2026-12-07T03:46:59.123456Z"
        );
    }

    #[test]
    fn a_dropped_syn_decodes_with_addresses_ports_and_flags() {
        let f = PacketSpec::tcp("192.0.2.1", "192.0.2.2", 40000, 23, 0x02).build();
        let h = header(Reason::DefaultDrop.slot(), f.len(), f.len());
        let e = decode(&h, &f, "eth0", 0);
        assert_eq!(e.reason, "default-drop");
        assert_eq!(e.verdict, "drop");
        assert_eq!(e.src, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(e.dport, Some(23));
        assert_eq!(e.tcp_flags.as_deref(), Some("S"));
        assert_eq!(
            syslog_line(&e),
            format!(
                "DROP reason=default-drop IN=eth0 SRC=192.0.2.1 DST=192.0.2.2 LEN={} PROTO=TCP SPT=40000 DPT=23 FLAGS=S",
                f.len()
            )
        );
        let line = text_line(&e);
        assert!(
            line.ends_with(&format!(
                "eth0 DROP default-drop tcp 192.0.2.1:40000 > 192.0.2.2:23 flags S len {}",
                f.len()
            )),
            "{line}"
        );
    }

    #[test]
    fn a_snapshot_shorter_than_the_frame_still_parses_its_headers() {
        let f = PacketSpec::tcp("192.0.2.1", "192.0.2.2", 40000, 80, 0x18)
            .payload(400)
            .build();
        let h = header(Reason::TcpNotSyn.slot(), f.len(), 64);
        let e = decode(&h, &f[..64], "eth0", 0);
        assert_eq!(e.dport, Some(80), "{e:?}");
        assert_eq!(e.len as usize, f.len());
    }

    #[test]
    fn filters_select_by_reason_port_and_source() {
        let f = PacketSpec::tcp("192.0.2.1", "192.0.2.2", 40000, 23, 0x02).build();
        let e = decode(&header(27, f.len(), f.len()), &f, "eth0", 0);
        let by = |reasons: &[&str], port, from: Option<&str>| Filter {
            reasons: reasons.iter().map(|s| s.to_string()).collect(),
            port,
            from: from.map(|c| c.parse().unwrap()),
        };
        assert!(by(&[], None, None).matches(&e));
        assert!(by(&["default-drop"], Some(23), Some("192.0.2.0/24")).matches(&e));
        assert!(!by(&["tcp-null"], None, None).matches(&e));
        assert!(!by(&[], Some(22), None).matches(&e));
        assert!(!by(&[], None, Some("198.51.100.0/24")).matches(&e));
    }
}
