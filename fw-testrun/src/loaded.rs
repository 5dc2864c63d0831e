//! [`LoadedFw`]: the real fw object (the `fw_xdp` filter and the `fw_egress` recorder) loaded
//! with its maps pinned in a private bpffs directory, not attached, with a policy written into
//! a generation exactly as `fw up` writes it. The kernel tests ([`crate::KernelFilter`]) and
//! the benchmark build on it.

use anyhow::{Context as _, bail};
use aya::Ebpf;
use fw::{
    loader::{Load, Variant, load_object_with},
    maps::PinnedMaps,
    paths::{IfacePaths, ensure_bpffs},
};
use fw_common::maps::FLOWS_OUT_MAX;
use fw_lab::PrivateDirs;
use fw_policy::{Compiled, Policy};

/// The fw object loaded in private directories (see the module documentation).
pub struct LoadedFw {
    // Field order is drop order: close the program and maps, then remove the pins.
    pub ebpf: Ebpf,
    pub maps: PinnedMaps,
    pub paths: IfacePaths,
    _dirs: PrivateDirs,
}

impl LoadedFw {
    /// Load with maps under `/sys/fs/bpf/<prefix>-<pid>-<n>` (state under /run), flow tables
    /// of the default size; nothing is written yet.
    pub fn load(prefix: &str, iface: &str) -> anyhow::Result<Self> {
        Self::load_sized(prefix, iface, FLOWS_OUT_MAX)
    }

    /// As [`LoadedFw::load`], with flow tables of `max_flows` entries.
    pub fn load_sized(prefix: &str, iface: &str, max_flows: u32) -> anyhow::Result<Self> {
        Self::load_with(prefix, iface, max_flows, Variant::probe())
    }

    /// As [`LoadedFw::load_sized`], with the build of the XDP program chosen (multi-buffer
    /// `xdp.frags`, or single-buffer for older kernels).
    pub fn load_with(
        prefix: &str,
        iface: &str,
        max_flows: u32,
        variant: Variant,
    ) -> anyhow::Result<Self> {
        ensure_bpffs().context("bpffs")?;
        let dirs = PrivateDirs::new(prefix)?;
        let paths = IfacePaths::at(iface, dirs.pins.clone(), dirs.state.clone());
        std::fs::create_dir_all(&paths.state).with_context(|| paths.state.display().to_string())?;
        let how = Load {
            log: false,
            max_flows,
            variant,
            extension_of: None,
        };
        let ebpf = load_object_with(&paths, how)
            .with_context(|| format!("loading the fw object ({variant:?})"))?;
        let maps = PinnedMaps::open(&paths).context("opening the pinned maps")?;
        Ok(LoadedFw {
            ebpf,
            maps,
            paths,
            _dirs: dirs,
        })
    }

    /// Fill generation `g` with `policy` (as `fw up` does for the inactive one, through the
    /// product's own [`PinnedMaps::write_policy`]), without flipping to it; returns what was
    /// written.
    pub fn write_generation(&mut self, policy: &Policy, g: u32) -> anyhow::Result<Compiled> {
        self.maps
            .write_policy(policy, g, false)
            .with_context(|| format!("writing generation {g}"))
    }

    /// The flip: generation `g` is in force from the next packet on.
    pub fn set_active(&mut self, g: u32) -> anyhow::Result<()> {
        self.maps.set_active(g).context("flipping FW_ACTIVE")?;
        let got = self.maps.active_generation()?;
        if got != g {
            bail!("FW_ACTIVE reads {got} after setting {g}");
        }
        Ok(())
    }
}
