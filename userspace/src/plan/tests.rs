//! Unit tests of the probe plan (pure: facts in, candidates out).

use std::collections::BTreeSet;

use super::*;

/// Kernel facts given as a set of existing targets.
struct Fake(BTreeSet<String>);

impl TargetFacts for Fake {
    type Missing = &'static str;

    fn target_exists(&self, t: &Target) -> Result<(), &'static str> {
        let key = match t {
            Target::Function(n) => format!("sym:{n}"),
            Target::BtfFunction(n) => format!("btf:{n}"),
            Target::BtfTracepoint(n) => format!("tpbtf:{n}"),
            Target::Tracepoint(c, n) => format!("tp:{c}:{n}"),
            Target::PartClone(n) => format!("part:{n}"),
        };
        if self.0.contains(&key) {
            Ok(())
        } else {
            Err("absent")
        }
    }
}

fn fake(items: &[&str]) -> Fake {
    Fake(items.iter().map(|s| s.to_string()).collect())
}

fn support(bad: &[Flavour]) -> FlavourSupport<&'static str> {
    Flavour::ALL
        .iter()
        .map(|f| {
            (
                *f,
                if bad.contains(f) {
                    Err("EPERM")
                } else {
                    Ok(())
                },
            )
        })
        .collect()
}

fn stat_spec() -> HookSpec {
    hooks()
        .into_iter()
        .find(|h| h.id == "stat.memcg_state")
        .unwrap()
}

fn first(plan: &HookPlan) -> Option<(Flavour, String)> {
    plan.usable()
        .next()
        .map(|c| (c.flavour, c.target.to_string()))
}

#[test]
fn this_machine_6_18_uses_tp_btf() {
    // 6.18 here: memcg tracepoints exist, fentry is refused, no kprobes.
    let f = fake(&[
        "tpbtf:mod_memcg_state",
        "tp:memcg:mod_memcg_state",
        "btf:mod_memcg_state",
        "sym:mod_memcg_state",
    ]);
    let p = plan_hook(
        &stat_spec(),
        &f,
        &support(&[Flavour::Fentry, Flavour::Kprobe]),
        None,
    );
    assert_eq!(first(&p), Some((Flavour::TpBtf, "mod_memcg_state".into())));
    let fentry = p
        .candidates
        .iter()
        .find(|v| v.candidate.flavour == Flavour::Fentry)
        .unwrap();
    assert_eq!(
        fentry.rejected.as_deref(),
        Some("fentry unusable on this kernel")
    );
}

#[test]
fn tp_btf_refused_falls_back_to_tracepoint() {
    let f = fake(&["tpbtf:mod_memcg_state", "tp:memcg:mod_memcg_state"]);
    let p = plan_hook(&stat_spec(), &f, &support(&[Flavour::TpBtf]), None);
    assert_eq!(
        first(&p),
        Some((Flavour::Tracepoint, "memcg:mod_memcg_state".into()))
    );
}

#[test]
fn kernel_6_1_uses_fentry_on_the_double_underscore_function() {
    // 6.1: no memcg tracepoints; __mod_memcg_state is T; mod_memcg_state only as clones
    // (which the kallsyms reader reports as not present).
    let f = fake(&["btf:__mod_memcg_state", "sym:__mod_memcg_state"]);
    let p = plan_hook(&stat_spec(), &f, &support(&[]), None);
    assert_eq!(
        first(&p),
        Some((Flavour::Fentry, "__mod_memcg_state".into()))
    );
    let p = plan_hook(&stat_spec(), &f, &support(&[Flavour::Fentry]), None);
    assert_eq!(
        first(&p),
        Some((Flavour::Kprobe, "__mod_memcg_state".into()))
    );
}

#[test]
fn kernel_6_16_plus_without_tracepoints_uses_the_new_name() {
    let f = fake(&["btf:mod_memcg_state", "sym:mod_memcg_state"]);
    let p = plan_hook(
        &stat_spec(),
        &f,
        &support(&[Flavour::TpBtf, Flavour::Tracepoint]),
        None,
    );
    assert_eq!(first(&p), Some((Flavour::Fentry, "mod_memcg_state".into())));
}

#[test]
fn forced_flavour_and_nothing_usable() {
    let f = fake(&["tpbtf:mod_memcg_state", "tp:memcg:mod_memcg_state"]);
    let p = plan_hook(&stat_spec(), &f, &support(&[]), Some(Flavour::Tracepoint));
    assert_eq!(
        first(&p),
        Some((Flavour::Tracepoint, "memcg:mod_memcg_state".into()))
    );
    let p = plan_hook(&stat_spec(), &fake(&[]), &support(&[]), None);
    assert_eq!(first(&p), None);
    assert!(p.candidates.iter().all(|v| v.rejected.is_some()));
}

#[test]
fn hooks_without_programs_report_what_would_be_used() {
    let spec = hooks()
        .into_iter()
        .find(|h| h.id == "lifecycle.release")
        .unwrap();
    let f = fake(&["sym:mem_cgroup_css_free", "btf:mem_cgroup_css_free"]);
    let p = plan_hook(&spec, &f, &support(&[Flavour::Fentry]), None);
    assert_eq!(p.usable().count(), 0);
    let w = p.would_use().unwrap();
    assert_eq!(w.candidate.flavour, Flavour::Kprobe);
    assert_eq!(w.rejected.as_deref(), Some(NO_PROGRAM));
}

#[test]
fn every_program_named_in_the_plan_is_unique_per_flavour() {
    for h in hooks() {
        for c in &h.candidates {
            if let Some(p) = c.program {
                assert!(
                    p.starts_with(match c.flavour {
                        Flavour::Fentry => "fentry_",
                        Flavour::Fexit => "fexit_",
                        Flavour::Kprobe => "kprobe_",
                        Flavour::Kretprobe => "kretprobe_",
                        Flavour::TpBtf => "tp_btf_",
                        Flavour::RawTracepoint => "raw_tp_",
                        Flavour::Tracepoint => "tp_",
                    }),
                    "{p}"
                );
            }
        }
    }
}

fn spec(id: &str) -> HookSpec {
    hooks().into_iter().find(|h| h.id == id).unwrap()
}

#[test]
fn charge_hooks_pair_entry_and_return_flavours() {
    // 6.1/6.12 guests: fentry, fexit, kprobe and kretprobe all work.
    let f = fake(&[
        "btf:try_charge_memcg",
        "sym:try_charge_memcg",
        "btf:page_counter_try_charge",
        "sym:page_counter_try_charge",
    ]);
    let entry = plan_hook(&spec("charge.try_charge"), &f, &support(&[]), None);
    let ret = plan_hook(&spec("charge.try_charge_ret"), &f, &support(&[]), None);
    assert_eq!(
        first(&entry),
        Some((Flavour::Fentry, "try_charge_memcg".into()))
    );
    assert_eq!(
        first(&ret),
        Some((Flavour::Fexit, "try_charge_memcg".into()))
    );
    // --attach kprobe brings kretprobe for the return hooks.
    let ret = plan_hook(
        &spec("charge.pc_try_ret"),
        &f,
        &support(&[]),
        Some(Flavour::Kprobe),
    );
    assert_eq!(
        first(&ret),
        Some((Flavour::Kretprobe, "page_counter_try_charge".into()))
    );
    // --attach fentry excludes the kprobe flavours.
    let ret = plan_hook(
        &spec("charge.try_charge_ret"),
        &f,
        &support(&[]),
        Some(Flavour::Fentry),
    );
    assert!(
        ret.usable()
            .all(|c| c.flavour == Flavour::Fexit || c.flavour == Flavour::Fentry)
    );
}

#[test]
fn host_6_18_has_no_charge_hooks_but_oom_tracepoints() {
    let f = fake(&[
        "btf:try_charge_memcg",
        "sym:try_charge_memcg",
        "tpbtf:mark_victim",
        "tp:oom:mark_victim",
        "tpbtf:mm_vmscan_memcg_reclaim_begin",
    ]);
    let no = support(&[
        Flavour::Fentry,
        Flavour::Fexit,
        Flavour::Kprobe,
        Flavour::Kretprobe,
    ]);
    for id in ["charge.try_charge", "charge.try_charge_ret"] {
        let p = plan_hook(&spec(id), &f, &no, None);
        assert_eq!(first(&p), None, "{id}");
    }
    let p = plan_hook(&spec("oom.mark_victim"), &f, &no, None);
    assert_eq!(first(&p), Some((Flavour::TpBtf, "mark_victim".into())));
    let p = plan_hook(&spec("oom.reclaim"), &f, &no, None);
    assert_eq!(
        first(&p),
        Some((Flavour::TpBtf, "mm_vmscan_memcg_reclaim_begin".into()))
    );
}

#[test]
fn refill_prefers_the_inner_function_and_falls_back_to_the_new_name() {
    let both = fake(&["btf:__refill_stock", "btf:refill_stock"]);
    let p = plan_hook(&spec("charge.refill_stock"), &both, &support(&[]), None);
    assert_eq!(first(&p), Some((Flavour::Fentry, "__refill_stock".into())));
    // 6.16+: only refill_stock.
    let new = fake(&["btf:refill_stock", "sym:refill_stock"]);
    let p = plan_hook(&spec("charge.refill_stock"), &new, &support(&[]), None);
    assert_eq!(first(&p), Some((Flavour::Fentry, "refill_stock".into())));
}

#[test]
fn flavour_cover_rules() {
    assert!(Flavour::Fentry.covers(Flavour::Fexit));
    assert!(Flavour::Kprobe.covers(Flavour::Kretprobe));
    assert!(!Flavour::Fexit.covers(Flavour::Fentry));
    assert!(!Flavour::Fentry.covers(Flavour::Kretprobe));
    assert!(Flavour::TpBtf.covers(Flavour::TpBtf));
    assert_eq!(Flavour::ALL.len(), 7);
}

#[test]
fn inference_hooks_follow_the_stat_hooks() {
    // 6.18 host: tp_btf; the classic tracepoint has no memcg pointer, so no program.
    let host = fake(&[
        "tpbtf:mod_memcg_lruvec_state",
        "tp:memcg:mod_memcg_lruvec_state",
    ]);
    let no_fn = support(&[
        Flavour::Fentry,
        Flavour::Fexit,
        Flavour::Kprobe,
        Flavour::Kretprobe,
    ]);
    let p = plan_hook(&spec("infer.lruvec_state"), &host, &no_fn, None);
    assert_eq!(
        first(&p),
        Some((Flavour::TpBtf, "mod_memcg_lruvec_state".into()))
    );
    let p = plan_hook(
        &spec("infer.lruvec_state"),
        &host,
        &support(&[Flavour::TpBtf]),
        None,
    );
    assert_eq!(first(&p), None, "no classic-tracepoint program");
    // 6.1/6.12 guests: fentry on the double-underscore function.
    let guest = fake(&[
        "btf:__mod_memcg_lruvec_state",
        "sym:__mod_memcg_lruvec_state",
    ]);
    let p = plan_hook(&spec("infer.lruvec_state"), &guest, &support(&[]), None);
    assert_eq!(
        first(&p),
        Some((Flavour::Fentry, "__mod_memcg_lruvec_state".into()))
    );
    assert_eq!(spec("infer.memcg_state").group, Group::Infer);
}
