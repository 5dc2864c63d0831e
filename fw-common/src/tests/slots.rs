//! Counter slots: every reason and every event counter owns its slot alone.

use crate::{
    Reason,
    maps::{
        BLOCK_LISTS, EVENT_BAN, EVENT_BAN_FAILED, EVENT_BLOCK_LIST, EVENT_FLOW_NEW,
        EVENT_FLOW_REMOVED, EVENT_RL_KNOWN, RULE_SLOT_BASE,
    },
};

fn event_slots() -> impl Iterator<Item = u32> {
    let flows = (0..3).flat_map(|t| [EVENT_FLOW_NEW + t, EVENT_FLOW_REMOVED + t]);
    let lists = (0..BLOCK_LISTS).map(|i| EVENT_BLOCK_LIST + i);
    [EVENT_BAN, EVENT_RL_KNOWN, EVENT_BAN_FAILED]
        .into_iter()
        .chain(flows)
        .chain(lists)
}

#[test]
fn no_reason_shares_its_counter_slot_with_an_event() {
    for r in Reason::ALL {
        assert!(r.slot() < RULE_SLOT_BASE, "{r:?}");
        assert!(
            event_slots().all(|e| e != r.slot()),
            "{r:?} counts at slot {}, which an event counter uses",
            r.slot()
        );
    }
}

#[test]
fn event_counters_do_not_overlap_each_other_or_the_rules() {
    let mut all = [0u32; RULE_SLOT_BASE as usize];
    for e in event_slots() {
        assert!(e < RULE_SLOT_BASE, "event slot {e}");
        all[e as usize] += 1;
    }
    assert!(all.iter().all(|&n| n <= 1), "{all:?}");
}
