//! `cargo bench -p fw-import`: how long `fw import iptables` takes for generated rule sets of
//! 1,000 to 100,000 rules (the unit test `import_work_grows_linearly_with_the_rules` holds the
//! work to linear growth; this shows the time).

use std::time::Instant;

use fw_import::{ImportOptions, iptables, scale::generated};

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000, 100_000]
    } else {
        sizes
    };
    println!(
        "{:>8}  {:>10}  {:>12}  {:>8}",
        "rules", "seconds", "work", "fw rules"
    );
    for n in sizes {
        let text = generated(n);
        let t = Instant::now();
        match iptables::import("generated", &text, &ImportOptions::default()) {
            Ok(i) => println!(
                "{n:>8}  {:>10.2}  {:>12}  {:>8}",
                t.elapsed().as_secs_f64(),
                i.work,
                i.policy.rules.len()
            ),
            Err(e) => println!("{n:>8}  refused: {e}"),
        }
    }
}
