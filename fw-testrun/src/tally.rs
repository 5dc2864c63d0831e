//! [`Tally`]: counts what a test checked against the kernel and collects every failure, so
//! one run reports all of them.

use fw_common::{Decision, Reason};

use crate::{Egress, Expect, KernelFilter, MIN_FRAME, describe, hex};

/// Counts what a test checked and collects every failure, so one run reports all of them.
pub struct Tally {
    label: String,
    pub packets: usize,
    pub truncations: usize,
    pub random: usize,
    pub egress: usize,
    /// Leaving frames BPF_PROG_TEST_RUN refused (too short for their IP header).
    pub egress_refused: usize,
    pub flow_checks: usize,
    failures: usize,
    messages: Vec<String>,
}

const MAX_MESSAGES: usize = 25;

impl Tally {
    pub fn new(label: impl Into<String>) -> Self {
        Tally {
            label: label.into(),
            packets: 0,
            truncations: 0,
            random: 0,
            egress: 0,
            egress_refused: 0,
            flow_checks: 0,
            failures: 0,
            messages: Vec::new(),
        }
    }

    /// Failures so far.
    pub fn failures(&self) -> usize {
        self.failures
    }

    pub fn fail(&mut self, msg: String) {
        self.failures += 1;
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(msg);
        }
    }

    fn agree(&mut self, f: &KernelFilter, what: &str, frame: &[u8]) -> Option<Decision> {
        match f.check(frame) {
            Ok(Ok(d)) => Some(d),
            Ok(Err(m)) => {
                self.fail(format!("{what}: KERNEL/USERSPACE MISMATCH: {m}"));
                None
            }
            Err(e) => {
                self.fail(format!("{what}: {e:#}"));
                None
            }
        }
    }

    /// One named packet: kernel and `decide()` agree, and both say `expect`.
    pub fn packet(&mut self, f: &KernelFilter, name: &str, frame: &[u8], expect: Expect) {
        self.packets += 1;
        let what = format!("[{}] {name}", self.label);
        let Some(d) = self.agree(f, &what, frame) else {
            return;
        };
        let want = expect.decision(f.active_generation());
        if d != want {
            self.fail(format!(
                "{what}: the table says {}, kernel and decide() agree on {}{}",
                describe(&want),
                describe(&d),
                hex(frame)
            ));
        }
    }

    /// Every prefix `frame[..len]`, `MIN_FRAME <= len < frame.len()`: kernel and `decide()`
    /// agree. With `all_truncated`, each must also be dropped as truncated (a well-formed IP
    /// datagram with no Ethernet padding, cut anywhere).
    pub fn truncations(&mut self, f: &KernelFilter, name: &str, frame: &[u8], all_truncated: bool) {
        for len in MIN_FRAME..frame.len() {
            self.truncations += 1;
            let what = format!(
                "[{}] {name} cut to {len} of {} bytes",
                self.label,
                frame.len()
            );
            let Some(d) = self.agree(f, &what, &frame[..len]) else {
                continue;
            };
            if all_truncated && d != Decision::reason(Reason::Truncated) {
                self.fail(format!(
                    "{what}: expected DROP [truncated], kernel and decide() agree on {}{}",
                    describe(&d),
                    hex(&frame[..len])
                ));
            }
        }
    }

    /// One step of a stateful sequence, an arriving frame: kernel and `decide()` agree (and
    /// say `expect`, if given), and afterwards so do their flow tables.
    pub fn ingress(
        &mut self,
        f: &KernelFilter,
        name: &str,
        frame: &[u8],
        expect: Option<Expect>,
    ) -> Option<Decision> {
        let d = match expect {
            Some(e) => {
                let before = self.failures;
                self.packet(f, name, frame, e);
                (self.failures == before).then(|| e.decision(f.active_generation()))
            }
            None => self.any(f, name, frame),
        };
        self.flows(f, &format!("after {name}"));
        d
    }

    /// One step of a stateful sequence, a leaving frame: the kernel's recorder passes it, and
    /// afterwards the kernel's flow tables are the mirror's.
    pub fn egress(&mut self, f: &KernelFilter, name: &str, frame: &[u8]) {
        self.egress += 1;
        let what = format!("[{}] egress {name}", self.label);
        match f.egress(frame) {
            Ok(Ok(Egress::Recorded)) => {}
            Ok(Ok(Egress::Refused)) => self.egress_refused += 1,
            Ok(Err(m)) => self.fail(format!("{what}: {m}")),
            Err(e) => self.fail(format!("{what}: {e:#}")),
        }
        self.flows(f, &format!("after egress {name}"));
    }

    /// The kernel's flow tables equal the mirror's.
    pub fn flows(&mut self, f: &KernelFilter, when: &str) {
        self.flow_checks += 1;
        match f.flow_diff() {
            Ok(d) if d.is_empty() => {}
            Ok(d) => self.fail(format!(
                "[{}] {when}: KERNEL/MIRROR FLOW TABLES DIFFER:\n    {}",
                self.label,
                d.join("\n    ")
            )),
            Err(e) => self.fail(format!("[{}] {when}: {e:#}", self.label)),
        }
    }

    /// Any frame (random, mutated): kernel and `decide()` agree. Returns the decision.
    pub fn any(&mut self, f: &KernelFilter, name: &str, frame: &[u8]) -> Option<Decision> {
        self.random += 1;
        let what = format!("[{}] {name}", self.label);
        self.agree(f, &what, frame)
    }

    /// Print the counts; panic with every failure (up to a limit) if there was one.
    pub fn finish(self) -> (usize, usize, usize) {
        let state = if self.egress + self.flow_checks > 0 {
            format!(
                ", {} egress frames ({} refused by the TC test run), {} flow-table comparisons",
                self.egress, self.egress_refused, self.flow_checks
            )
        } else {
            String::new()
        };
        println!(
            "[{}] checked {} packets, {} truncations, {} random frames{state} against the kernel: {} failures",
            self.label, self.packets, self.truncations, self.random, self.failures
        );
        if self.failures > 0 {
            let more = self.failures.saturating_sub(self.messages.len());
            panic!(
                "[{}] {} failures:\n{}{}",
                self.label,
                self.failures,
                self.messages.join("\n"),
                if more > 0 {
                    format!("\n... and {more} more")
                } else {
                    String::new()
                }
            );
        }
        (self.packets, self.truncations, self.random)
    }
}
