//! Kernel tier: pinned maps are checked before reuse (PITFALLS: "pinned maps reused after an
//! upgrade with another layout"). A map pinned where fw expects one of its own, but with
//! another type or size, is refused with the path named — never silently reused — and a map of
//! the right layout is reused with its contents.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use fw::{
    Error,
    loader::load_object,
    maps::PinnedMaps,
    paths::{BPFFS, IfacePaths, ensure_bpffs},
};
use fw_common::{
    PortProto,
    maps::{MAP_PORTS, port_index},
};

/// A private bpffs directory and state directory, removed on drop (also when a test panics).
struct Dirs {
    paths: IfacePaths,
}

impl Dirs {
    fn new(tag: &str) -> Self {
        // SAFETY: no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "the kernel tier needs root");
        ensure_bpffs().expect("bpffs");
        let name = format!("fw-testpins-{}-{tag}", std::process::id());
        let pins = Path::new(BPFFS).join(&name);
        let state = PathBuf::from("/run").join(&name);
        std::fs::create_dir_all(&pins).unwrap();
        Dirs {
            paths: IfacePaths::at("test", pins, state),
        }
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.paths.pins);
        let _ = std::fs::remove_dir_all(&self.paths.state);
    }
}

fn bpftool_map_create(path: &Path, value_size: u32) {
    let out = Command::new("bpftool")
        .args(["map", "create"])
        .arg(path)
        .args([
            "type",
            "array",
            "key",
            "4",
            "value",
            &value_size.to_string(),
            "entries",
            "16",
            "name",
            MAP_PORTS,
        ])
        .output()
        .expect("bpftool (installed by cargo xtask setup)");
    assert!(out.status.success(), "bpftool map create: {out:?}");
}

#[test]
fn a_pinned_map_of_another_layout_is_refused_and_left_alone() {
    let d = Dirs::new("bad");
    let ports = d.paths.map(MAP_PORTS);
    bpftool_map_create(&ports, 8);
    let before = aya::maps::MapInfo::from_pin(&ports).unwrap().id();
    match load_object(&d.paths, false, fw_common::maps::FLOWS_OUT_MAX) {
        Err(Error::MapLayout { path, detail, .. }) => {
            assert_eq!(path, ports);
            assert!(detail.contains("value 8"), "{detail}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a map of another layout was reused"),
    }
    // The foreign map is still the one pinned there, untouched.
    assert_eq!(aya::maps::MapInfo::from_pin(&ports).unwrap().id(), before);
}

#[test]
fn a_pinned_map_of_the_right_layout_is_reused_with_its_contents() {
    let d = Dirs::new("good");
    let first = load_object(&d.paths, false, fw_common::maps::FLOWS_OUT_MAX).expect("first load");
    let id = aya::maps::MapInfo::from_pin(d.paths.map(MAP_PORTS))
        .unwrap()
        .id();
    let c = fw_policy::Compiled::new(
        &fw_policy::parse_policy("p", "[[allow]]\nports = [4242]\n").unwrap(),
        1,
    );
    PinnedMaps::open(&d.paths)
        .unwrap()
        .write_generation(&c, &[])
        .unwrap();
    drop(first);
    // A second load (what `fw up` on an attached interface does) finds the same map.
    let _second =
        load_object(&d.paths, false, fw_common::maps::FLOWS_OUT_MAX).expect("second load");
    assert_eq!(
        aya::maps::MapInfo::from_pin(d.paths.map(MAP_PORTS))
            .unwrap()
            .id(),
        id
    );
    let maps = PinnedMaps::open(&d.paths).unwrap();
    assert_ne!(maps.port(port_index(1, PortProto::Tcp, 4242)).unwrap(), 0);
    assert_eq!(maps.port(port_index(1, PortProto::Tcp, 4243)).unwrap(), 0);
}
