//! [`KernelFilter`] for the SYN cookie step (`fw_common::syncookie`): the frame the program
//! leaves after XDP_TX, the listener table and host facts on both sides, and the cookies the
//! mirror is taught (userspace cannot compute the kernel's: its secret).

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use aya::{TestRunOptions, programs::TestRun as _};
use fw_common::{
    maps::{
        COOKIE_PROG_INDEX, MAP_COOKIE_CFG, MAP_COOKIE_PROG, MAP_COOKIE_PROG_LINEAR,
        MAP_COOKIE_STATS, MAP_LISTENERS,
    },
    syncookie::{CookieCfg, CookieTuple, Listener, ListenerKey},
};

use crate::{KernelFilter, MIN_FRAME};

impl KernelFilter {
    /// Run `frame` through the kernel program once; the XDP return value and the frame as
    /// the program left it (a SYN+ACK after XDP_TX).
    pub fn run_out(&self, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
        if frame.len() < MIN_FRAME {
            bail!("BPF_PROG_TEST_RUN refuses XDP frames under {MIN_FRAME} bytes");
        }
        // Room for a frame the program grows (the answer is at most 40 bytes of TCP header).
        let mut out = vec![0u8; frame.len() + 256];
        let r = self
            .program()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN of a {}-byte frame", frame.len()))?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    /// The kernel's `FW_COOKIE_CFG`.
    pub fn kernel_cookie_cfg(&self) -> anyhow::Result<CookieCfg> {
        let path = self.fw.paths.map(MAP_COOKIE_CFG);
        let md = aya::maps::MapData::from_pin(&path).with_context(|| path.display().to_string())?;
        let map = aya::maps::Map::from_map_data(md)?;
        let a: aya::maps::Array<_, CookieCfg> = aya::maps::Array::try_from(&map)?;
        Ok(a.get(&0, 0)?)
    }

    /// Set the host facts for cookie answers on both sides.
    pub fn set_cookie_cfg(&self, cfg: CookieCfg) -> anyhow::Result<()> {
        let path = self.fw.paths.map(MAP_COOKIE_CFG);
        let md = aya::maps::MapData::from_pin(&path).with_context(|| path.display().to_string())?;
        let mut map = aya::maps::Map::from_map_data(md)?;
        let mut a: aya::maps::Array<_, CookieCfg> = aya::maps::Array::try_from(&mut map)?;
        a.set(0, cfg, 0)?;
        self.mirror.cookie_cfg.set(cfg);
        Ok(())
    }

    fn listeners_map(&self) -> anyhow::Result<aya::maps::Map> {
        let path = self.fw.paths.map(MAP_LISTENERS);
        let md = aya::maps::MapData::from_pin(&path).with_context(|| path.display().to_string())?;
        Ok(aya::maps::Map::from_map_data(md)?)
    }

    /// Put the same listener entry on both sides (what the egress recorder writes when it
    /// sees the kernel answer with a cookie).
    pub fn set_listener(&self, key: &ListenerKey, l: &Listener) -> anyhow::Result<()> {
        let mut map = self.listeners_map()?;
        let mut h: aya::maps::HashMap<_, ListenerKey, Listener> =
            aya::maps::HashMap::try_from(&mut map)?;
        h.insert(key, l, 0)?;
        self.mirror.listeners.borrow_mut().insert(*key, *l);
        Ok(())
    }

    /// The kernel's listener entries.
    pub fn kernel_listeners(&self) -> anyhow::Result<BTreeMap<ListenerKey, Listener>> {
        let map = self.listeners_map()?;
        let h: aya::maps::HashMap<_, ListenerKey, Listener> = aya::maps::HashMap::try_from(&map)?;
        Ok(h.iter().filter_map(|r| r.ok()).collect())
    }

    /// Where the kernel's listener entries differ from the mirror's (times may differ by one
    /// tick: the two sides read the clock a moment apart).
    pub fn listener_diff(&self) -> anyhow::Result<Vec<String>> {
        let k = self.kernel_listeners()?;
        let m = self.mirror.listeners.borrow().clone();
        let close = |a: u32, b: u32| a.abs_diff(b) <= 1;
        let mut out = Vec::new();
        for (key, kv) in &k {
            match m.get(key) {
                None => out.push(format!("kernel only: {key:?} {kv:?}")),
                Some(mv)
                    if !(close(kv.seen, mv.seen)
                        && close(kv.passed, mv.passed)
                        && close(kv.answered, mv.answered)
                        && (kv.mss, kv.window, kv.wscale) == (mv.mss, mv.window, mv.wscale)) =>
                {
                    out.push(format!("{key:?}: kernel {kv:?}, mirror {mv:?}"))
                }
                Some(_) => {}
            }
        }
        for key in m.keys() {
            if !k.contains_key(key) {
                out.push(format!("mirror only: {key:?}"));
            }
        }
        Ok(out)
    }

    /// Teach the mirror that the ACK described by `c` carries a valid cookie (the kernel
    /// answered its SYN with it).
    pub fn learn_cookie(&self, c: CookieTuple) {
        self.mirror.valid_cookies.borrow_mut().insert(c);
    }

    /// The kernel's cookie-path events (`FW_COOKIE_STATS`), summed over CPUs.
    pub fn cookie_event(&self, stat: u32) -> anyhow::Result<u64> {
        let path = self.fw.paths.map(MAP_COOKIE_STATS);
        let md = aya::maps::MapData::from_pin(&path).with_context(|| path.display().to_string())?;
        let map = aya::maps::Map::from_map_data(md)?;
        let a: aya::maps::PerCpuArray<_, u64> = aya::maps::PerCpuArray::try_from(&map)?;
        Ok(a.get(&stat, 0)?.iter().sum())
    }

    /// Take the SYN cookie step out of its program array (as when `fw_xdp` runs as an
    /// extension of a libxdp dispatcher, where the step cannot be loaded).
    pub fn remove_cookie_step(&self) -> anyhow::Result<()> {
        let name = match self.variant() {
            fw::loader::Variant::Frags => MAP_COOKIE_PROG,
            fw::loader::Variant::Linear => MAP_COOKIE_PROG_LINEAR,
        };
        let path = self.fw.paths.map(name);
        let md = aya::maps::MapData::from_pin(&path).with_context(|| path.display().to_string())?;
        let mut map = aya::maps::Map::from_map_data(md)?;
        let mut a: aya::maps::ProgramArray<_> = aya::maps::ProgramArray::try_from(&mut map)?;
        a.clear_index(&COOKIE_PROG_INDEX)?;
        Ok(())
    }
}
