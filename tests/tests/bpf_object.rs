//! fw's BPF object as the `fw` binary embeds it, read as an ELF file (no root, nothing loaded):
//! what its functions call.

use anyhow::Context as _;
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SymbolKind};

/// The memory functions LLVM can leave as calls in a BPF object. bpf-linker exports the
/// portable versions, which copy or fill one byte per loop turn behind a BPF-to-BPF call:
/// a zeroed 16-byte address cost every IPv4 packet two of them (~30 ns here) until
/// fw-ebpf/build.rs had LLVM expand them inline.
const MEMORY_FUNCTIONS: [&str; 5] = ["memcpy", "memmove", "memset", "memcmp", "bcmp"];

/// The XDP programs every packet runs: one BPF function each (fw_ebpf's `fw_xdp`).
const HOT_PROGRAMS: [&str; 2] = ["fw_xdp", "fw_xdp_linear"];

/// One relocation of the object: the function it sits in, what it refers to, and whether that
/// is code (a BPF-to-BPF call) rather than a map or a global.
struct Reference {
    from: String,
    to: String,
    call: bool,
}

/// Every relocation of the object. A call to a function of the object's own `.text` names
/// the section; a call to an exported function (the memory functions) or a map names it.
fn references(elf: &[u8]) -> anyhow::Result<Vec<Reference>> {
    let file = object::File::parse(elf).context("fw's BPF object is not an ELF file")?;
    let mut out = Vec::new();
    for section in file.sections() {
        let functions: Vec<_> = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.section_index() == Some(section.index()))
            .collect();
        for (offset, reloc) in section.relocations() {
            let RelocationTarget::Symbol(index) = reloc.target() else {
                continue;
            };
            let target = file.symbol_by_index(index)?;
            let to = match target.name()? {
                "" => file
                    .section_by_index(target.section_index().context("section")?)?
                    .name()?
                    .to_string(),
                name => name.to_string(),
            };
            let from = functions
                .iter()
                .find(|f| f.address() <= offset && offset < f.address() + f.size())
                .map_or_else(
                    || format!("{}+{offset:#x}", section.name().unwrap_or("?")),
                    |f| f.name().unwrap_or("?").to_string(),
                );
            let call = matches!(target.kind(), SymbolKind::Text | SymbolKind::Section)
                && to != ".maps"
                && !to.starts_with(".rodata")
                && !to.starts_with(".data")
                && !to.starts_with(".bss");
            out.push(Reference { from, to, call });
        }
    }
    Ok(out)
}

fn calls_from<'a>(refs: &'a [Reference], from: &str) -> Vec<&'a str> {
    refs.iter()
        .filter(|r| r.call && r.from == from)
        .map(|r| r.to.as_str())
        .collect()
}

/// The reading itself works: fw_xdp's reference to the map of the active policy generation is
/// seen (else the checks below would pass on an object they could not read).
fn read_fw() -> anyhow::Result<Vec<Reference>> {
    let refs = references(fw::loader::PROGRAM)?;
    assert!(
        refs.iter()
            .any(|r| r.from == "fw_xdp" && r.to == fw_common::maps::MAP_ACTIVE),
        "fw_xdp's reference to {} not found: the relocations were not read",
        fw_common::maps::MAP_ACTIVE
    );
    Ok(refs)
}

#[test]
fn no_function_of_fw_calls_a_byte_at_a_time_memory_function() -> anyhow::Result<()> {
    let refs = read_fw()?;
    let slow: Vec<_> = refs
        .iter()
        .filter(|r| r.call && MEMORY_FUNCTIONS.contains(&r.to.as_str()))
        .map(|r| (&r.from, &r.to))
        .collect();
    assert!(
        slow.is_empty(),
        "BPF functions call byte-at-a-time memory functions (a copy or fill of a variable length; \
         copy constant lengths, see fw_common::track::source_key): {slow:?}"
    );
    Ok(())
}

#[test]
fn the_xdp_programs_are_one_function_each() -> anyhow::Result<()> {
    let refs = read_fw()?;
    for prog in HOT_PROGRAMS {
        let calls = calls_from(&refs, prog);
        assert!(
            calls.is_empty(),
            "{prog} makes BPF-to-BPF calls ({calls:?}), 10-12 ns each: something it runs was \
             not inlined (see fw-ebpf/build.rs)"
        );
    }
    Ok(())
}
