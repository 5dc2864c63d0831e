//! The classic pcap file format (tcpdump, Wireshark, tshark read it): a global header, then
//! one record header and the captured bytes per packet. Microsecond timestamps, Ethernet link
//! type, little-endian as written on this host (readers detect it from the magic).

use std::io::{self, Write};

pub const MAGIC_USEC: u32 = 0xa1b2_c3d4;
pub const LINKTYPE_ETHERNET: u32 = 1;

pub struct PcapWriter<W: Write> {
    out: W,
    snaplen: u32,
    packets: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Write the global header.
    pub fn new(mut out: W, snaplen: u32) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC_USEC.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes()); // thiszone: UTC
        h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        h.extend_from_slice(&snaplen.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter {
            out,
            snaplen,
            packets: 0,
        })
    }

    /// One packet: `data` as captured (at most the snap length), `orig_len` its length on the
    /// wire, `unix_ns` when it arrived.
    pub fn write(&mut self, unix_ns: u64, data: &[u8], orig_len: u32) -> io::Result<()> {
        let data = &data[..data.len().min(self.snaplen as usize)];
        let mut h = Vec::with_capacity(16);
        h.extend_from_slice(&((unix_ns / 1_000_000_000) as u32).to_le_bytes());
        h.extend_from_slice(&(((unix_ns % 1_000_000_000) / 1000) as u32).to_le_bytes());
        h.extend_from_slice(&(data.len() as u32).to_le_bytes());
        h.extend_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(data)?;
        self.packets += 1;
        Ok(())
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Read a pcap file written by [`PcapWriter`] back: (ts_ns, data, orig_len) per packet.
pub fn read(bytes: &[u8]) -> Result<Vec<(u64, Vec<u8>, u32)>, String> {
    let u32_at = |o: usize| -> Result<u32, String> {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("truncated at byte {o}"))
    };
    if u32_at(0)? != MAGIC_USEC {
        return Err("not a little-endian microsecond pcap file".into());
    }
    if u32_at(20)? != LINKTYPE_ETHERNET {
        return Err("not an Ethernet capture".into());
    }
    let mut out = Vec::new();
    let mut o = 24;
    while o < bytes.len() {
        let (sec, usec, incl, orig) = (u32_at(o)?, u32_at(o + 4)?, u32_at(o + 8)?, u32_at(o + 12)?);
        let start = o + 16;
        let data = bytes
            .get(start..start + incl as usize)
            .ok_or_else(|| format!("packet at byte {o} runs past the end"))?;
        out.push((
            u64::from(sec) * 1_000_000_000 + u64::from(usec) * 1000,
            data.to_vec(),
            orig,
        ));
        o = start + incl as usize;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_records_have_the_classic_layout() {
        let mut w = PcapWriter::new(Vec::new(), 1536).unwrap();
        w.write(1_700_000_000_123_456_789, &[0xaa; 60], 60).unwrap();
        w.write(1_700_000_001_000_000_000, &[0xbb; 2000], 2000)
            .unwrap();
        assert_eq!(w.packets(), 2);
        let b = w.into_inner();
        assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "magic, little-endian");
        assert_eq!(&b[4..8], &[2, 0, 4, 0], "version 2.4");
        assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 1536);
        assert_eq!(u32::from_le_bytes(b[20..24].try_into().unwrap()), 1);
        // First record: seconds, microseconds (truncated), lengths.
        assert_eq!(
            u32::from_le_bytes(b[24..28].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(u32::from_le_bytes(b[28..32].try_into().unwrap()), 123_456);
        assert_eq!(u32::from_le_bytes(b[32..36].try_into().unwrap()), 60);
        assert_eq!(b.len(), 24 + 16 + 60 + 16 + 1536);
        let back = read(&b).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].1.len(), 1536, "cut to the snap length");
        assert_eq!(back[1].2, 2000, "the length on the wire is kept");
    }

    #[test]
    fn reading_garbage_is_an_error() {
        assert!(read(b"hello, world, this is not pcap").is_err());
    }
}
