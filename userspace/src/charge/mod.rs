//! The charge path and the OOM path: kernel layout for the probes, a running [`ChargeTracer`]
//! (facts -> plan -> load -> attach, then snapshots), and the figures derived from its
//! aggregates.
//!
//! What the probes record is in `probes_common::charge`. This module turns a window of
//! aggregates into per-(cgroup, CPU) figures: charge attempts and pages requested, the pages
//! served from the per-CPU stock versus charged to the page_counter in batches, the batch
//! surplus parked in the stock, pages given back to the stock and drained from it, failures
//! and which counter was at its limit, reclaim rounds, OOM invocations and kills. Rare OOM
//! events arrive through the ring buffer as [`OomRecord`]s.
//!
//! Hooks that cannot attach are reported per hook with every candidate's reason; where no
//! charge hook attaches at all (fentry refused, no kprobes), [`ChargeTracer::unavailable`]
//! says so in one line and the OOM-path tracepoints still work.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::Program,
};
use probes_common::{
    ProbeConfig, WIRE_VERSION,
    charge::{
        ChargeConfig, ChargeDense, ChargeKey, ChargeValue, GLOBAL_CHARGE_CONFIG, MAP_CHARGE_AGG,
        MAP_CHARGE_COUNTERS, MAP_CHARGE_DENSE, MAP_CHARGE_RUNTIME, MAP_INFER_LAST, MAP_INFER_SLOT,
        MAP_MEMCG_EVENTS, MAP_OOM_EVENTS, MemEvents, OomEvent, ccounter, counter, kind, oom_kind,
        runtime,
    },
};
use serde::Serialize;

use crate::{
    attach::{self, Filter, HookOutcome, UsedCandidate},
    attach::{SharedEbpf, lock},
    cgroup::CgroupVersion,
    kernel::{KernelFacts, btf::KernelBtf, tracefs},
    plan::{self, Flavour, FlavourSupport, Group, HookPlan},
};

mod config;
mod figures;
mod render;
mod section;
mod tracer;

pub use config::*;
pub use figures::*;
pub use render::*;
pub use section::*;
pub use tracer::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_is_one_line_with_every_cause() {
        let e = ChargeTracerError::from(aya::maps::MapError::from(aya::sys::SyscallError {
            call: "bpf_map_lookup_elem",
            io_error: std::io::Error::from_raw_os_error(libc::EPERM),
        }));
        // As `{:#}` printed it when the inner error was untyped: every cause, on one line.
        assert_eq!(
            ChargeUnavailable(e).to_string(),
            "`bpf_map_lookup_elem` failed: Operation not permitted (os error 1)"
        );
        let missing = ChargeUnavailable(ChargeTracerError::MissingMap("CHARGE_AGG"));
        assert_eq!(missing.to_string(), "map CHARGE_AGG missing");
    }

    #[test]
    fn proc_cgroups_hierarchy_of_memory() {
        let text =
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\nmemory\t7\t120\t1\n";
        assert_eq!(parse_proc_cgroups_hierarchy(text, "memory"), Some(7));
        assert_eq!(parse_proc_cgroups_hierarchy(text, "pids"), None);
    }

    fn key(kind: u32, counter: u32) -> ChargeKey {
        ChargeKey {
            cgroup_id: 5,
            kind,
            counter,
        }
    }

    fn v(events: u64, pages: u64) -> ChargeValue {
        ChargeValue { pages, events }
    }

    /// 100 one-page charges on CPU 1 from an empty stock: 2 batches of 64, 28 surplus parked,
    /// 98 pages served from the stock.
    fn window() -> ChargeSnapshot {
        let mut s = ChargeSnapshot::default();
        let two = |x| vec![ChargeValue::default(), x];
        s.rows
            .insert(key(kind::TC_CALL, counter::NONE), two(v(100, 100)));
        s.rows
            .insert(key(kind::TC_OK_STOCK, counter::NONE), two(v(98, 98)));
        s.rows
            .insert(key(kind::TC_OK_COUNTER, counter::NONE), two(v(2, 2)));
        s.rows
            .insert(key(kind::TC_CHARGED, counter::MEMORY), two(v(2, 128)));
        s.rows
            .insert(key(kind::PC_TRY_OK, counter::MEMORY), two(v(2, 128)));
        s.rows
            .insert(key(kind::REFILL_BATCH, counter::NONE), two(v(2, 126)));
        s
    }

    #[test]
    fn figures_derive_stock_service() {
        let s = window();
        let f = s.figures(5);
        assert_eq!(f.len(), 1);
        let c = &f[0];
        assert_eq!(c.cpu, 1);
        assert_eq!(
            c.try_charge,
            Fig {
                events: 100,
                pages: 100
            }
        );
        assert_eq!(c.served_from_stock.pages, 98);
        assert_eq!(
            c.batches,
            Fig {
                events: 2,
                pages: 128
            }
        );
        assert_eq!(c.derived_stock_pages(), 98);
        assert_eq!(c.memory().try_charge_ok.pages, 128);
        assert_eq!(c.memory().net_pages(), 128);
        let t = s.totals(5);
        assert_eq!(t.cpu, usize::MAX);
        assert_eq!(t.try_charge.pages, 100);
        assert!(s.figures(6).is_empty());
        assert_eq!(s.total(5, kind::TC_CALL, counter::NONE).events, 100);
    }

    #[test]
    fn since_subtracts_and_keeps_new_oom_events() {
        let a = window();
        let mut b = window();
        b.rows.insert(
            key(kind::TC_CALL, counter::NONE),
            vec![v(1, 1), v(101, 101)],
        );
        let rec = OomRecord {
            kind: "kill",
            cpu: 0,
            ts_ns: 1,
            cgroup_id: 5,
            pid: 42,
            comm: "x".into(),
            order: Some(0),
            current_pid: 42,
        };
        b.oom.push(rec.clone());
        let d = b.since(&a);
        assert_eq!(d.rows.len(), 1);
        assert_eq!(
            d.per_cpu(5, kind::TC_CALL, counter::NONE),
            vec![v(1, 1), v(1, 1)]
        );
        assert_eq!(d.oom, vec![rec]);
    }

    #[test]
    fn decodes_oom_events() {
        let mut e = OomEvent {
            kind: oom_kind::KILL,
            cpu: 3,
            ts_ns: 9,
            cgroup_id: 77,
            pid: 1234,
            order: 0,
            comm: [0; 16],
            current_pid: 1234,
            _pad: 0,
        };
        e.comm[..11].copy_from_slice(b"memcg-drift");
        // SAFETY: viewing a plain #[repr(C)] integer struct as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const e).cast::<u8>(), std::mem::size_of::<OomEvent>())
        };
        let r = OomRecord::decode(bytes).unwrap();
        assert_eq!(
            (r.kind, r.pid, r.comm.as_str(), r.cgroup_id, r.order),
            ("kill", 1234, "memcg-drift", 77, Some(0))
        );
        assert!(OomRecord::decode(&bytes[..10]).is_none());
        e.kind = 99;
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const e).cast::<u8>(), std::mem::size_of::<OomEvent>())
        };
        assert!(OomRecord::decode(bytes).is_none());
    }

    #[test]
    fn unavailable_line_names_each_flavour_family_once() {
        let o = |id: &'static str, failed: Vec<(Flavour, String, String)>| HookOutcome {
            id,
            used: None,
            failed,
            loss: "",
        };
        let eperm = "the BPF_PROG_LOAD syscall failed: Operation not permitted (os error 1)";
        let outcomes = vec![
            o(
                "charge.try_charge",
                vec![
                    (Flavour::Fentry, "try_charge_memcg".into(), eperm.into()),
                    (
                        Flavour::Kprobe,
                        "try_charge_memcg".into(),
                        "kernel has no kprobe PMU (CONFIG_KPROBES off)".into(),
                    ),
                ],
            ),
            o(
                "charge.try_charge_ret",
                vec![(Flavour::Fexit, "try_charge_memcg".into(), eperm.into())],
            ),
            o("oom.mark_victim", vec![]),
        ];
        assert_eq!(
            unavailable_line(&outcomes).unwrap(),
            "charge path: not attachable here (fentry/fexit: EPERM; kprobe/kretprobe: no kprobe PMU)"
        );
        let mut ok = outcomes;
        ok[0].used = Some(UsedCandidate {
            flavour: Flavour::Fentry,
            target: "try_charge_memcg".into(),
            program: "fentry_try_charge",
        });
        assert_eq!(unavailable_line(&ok), None);
    }

    #[test]
    fn section_text_fits_100_columns() {
        let w = window();
        let mut f = w.figures(5).remove(0);
        f.counters.entry("memory").or_default().limit_hits = Fig {
            events: 3,
            pages: 192,
        };
        f.oom = Fig {
            events: 1,
            pages: 0,
        };
        f.reclaim_rounds = Fig {
            events: 36,
            pages: 0,
        };
        let row = ChargeCpuRow {
            cgroup: "/memcg-drift/123456-789012/a-rather-long-cgroup-name/child".into(),
            cgroup_id: 5,
            figures: f,
        };
        let long =
            "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1) ".repeat(4);
        let sec = ChargeSection {
            available: true,
            unavailable: None,
            hooks: vec![
                HookOutcome {
                    id: "charge.try_charge",
                    used: Some(UsedCandidate {
                        flavour: Flavour::Fentry,
                        target: "try_charge_memcg".into(),
                        program: "fentry_try_charge",
                    }),
                    failed: vec![],
                    loss: "",
                },
                HookOutcome {
                    id: "charge.drain_all_stock",
                    used: None,
                    failed: vec![(Flavour::Fentry, "drain_all_stock".into(), long.clone())],
                    loss: "",
                },
            ],
            cpus: vec![row],
            rows: vec![],
            oom: vec![OomRecord {
                kind: "kill",
                cpu: 127,
                ts_ns: 5_000_000_000,
                cgroup_id: 123_456_789,
                pid: 4_000_000,
                comm: "a-very-long-nam".into(),
                order: Some(0),
                current_pid: 1,
            }],
            start_ns: 1_000_000_000,
            inference: Some(INFERENCE_METHOD.into()),
            inferred_closing: vec![ClosingReading {
                cgroup: "/memcg-drift/123456-789012/a-rather-long-cgroup-name/child/and/more/x"
                    .into(),
                cgroup_id: 5,
                at_last_stat_event: 1_000_000,
                at_end: 1_000_064,
            }],
            lost: 0,
            counters: ChargeCounters::default(),
            memory_event_names: [(2, "max"), (3, "oom"), (4, "oom_kill")]
                .into_iter()
                .map(|(i, n)| (i, n.to_string()))
                .collect(),
        };
        let mut sec = sec;
        sec.cpus[0].figures.inferred_charged = Fig {
            events: 2,
            pages: 128,
        };
        sec.cpus[0].figures.memory_events = BTreeMap::from([(2, 5), (3, 1), (4, 1), (9, 2)]);
        let text = render_section(&sec);
        assert!(
            text.contains("charge path: 1 of 2 hooks attached (fentry)"),
            "{text}"
        );
        assert!(
            text.contains("inferred from page_counter readings"),
            "{text}"
        );
        assert!(text.contains("memory limit hit 3x"), "{text}");
        assert!(
            text.contains("memory.events max 5, oom 1, oom_kill 1, #9 2"),
            "{text}"
        );
        assert!(text.contains("+4.000s cpu 127: OOM kill"), "{text}");
        for line in text.lines() {
            assert!(line.chars().count() <= 100, "too wide: {line}");
        }
        let off = ChargeSection {
            unavailable: Some(format!("charge path: not attachable here ({long})")),
            ..ChargeSection::default()
        };
        for line in render_section(&off).lines() {
            assert!(line.chars().count() <= 100, "too wide: {line}");
        }
    }
}
