//! fw's BPF object as the `fw` binary embeds it, read as an ELF file (no root, nothing loaded):
//! what its functions call.

use anyhow::Context as _;
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SymbolKind};

/// The memory functions LLVM can leave as calls in a BPF object. bpf-linker exports the
/// portable versions, which copy or fill one byte per loop turn behind a BPF-to-BPF call:
/// a zeroed 16-byte address cost every IPv4 packet two of them (~30 ns here) until
/// fw-ebpf/build.rs had LLVM expand them inline.
const MEMORY_FUNCTIONS: [&str; 5] = ["memcpy", "memmove", "memset", "memcmp", "bcmp"];

/// Every call relocation of the object as (calling function, called symbol). A call to a
/// function of the same object's `.text` names the section; a call to an exported function
/// (the memory functions) names it.
fn calls(elf: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
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
            let called = match target.name()? {
                "" => file
                    .section_by_index(target.section_index().context("section")?)?
                    .name()?
                    .to_string(),
                name => name.to_string(),
            };
            if target.kind() != SymbolKind::Text && target.kind() != SymbolKind::Section {
                continue; // a map or a global, not a call
            }
            let caller = functions
                .iter()
                .find(|f| f.address() <= offset && offset < f.address() + f.size())
                .map_or_else(
                    || format!("{}+{offset:#x}", section.name().unwrap_or("?")),
                    |f| f.name().unwrap_or("?").to_string(),
                );
            out.push((caller, called));
        }
    }
    Ok(out)
}

#[test]
fn no_function_of_fw_calls_a_byte_at_a_time_memory_function() -> anyhow::Result<()> {
    let calls = calls(fw::loader::PROGRAM)?;
    // The reading itself works: the XDP program's call into its parser is seen.
    assert!(
        calls.iter().any(|(caller, _)| caller == "fw_xdp"),
        "no call from fw_xdp found: the relocations were not read ({calls:?})"
    );
    let slow: Vec<_> = calls
        .iter()
        .filter(|(_, called)| MEMORY_FUNCTIONS.contains(&called.as_str()))
        .collect();
    assert!(
        slow.is_empty(),
        "BPF functions call byte-at-a-time memory functions (a variable-length copy or fill; \
         build the value whole, see fw_common::track::source_key): {slow:?}"
    );
    Ok(())
}
