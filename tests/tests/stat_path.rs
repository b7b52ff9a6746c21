//! The stat-path probes against the real kernel: a workload process, already inside a fresh
//! cgroup and pinned to one CPU, touches exactly N anonymous pages; over that phase the
//! cgroup's NR_ANON_MAPPED delta must be +N on that CPU and 0 on every other CPU. Freed on
//! another CPU, the phase must show -N there.
//!
//! Why exact: the anon fault path adds each new anonymous page to NR_ANON_MAPPED of the
//! faulting task's memcg synchronously, on the faulting CPU (`folio_add_new_anon_rmap` ->
//! `__lruvec_stat_mod_folio` -> `mod_memcg_lruvec_state`), and MADV_DONTNEED removes the rmap
//! synchronously on the calling CPU (`zap_pte_range` -> `folio_remove_rmap_ptes`). The
//! workload disables THP on its region and faults all of its own memory in before it
//! reports ready, so nothing else anonymous happens in the window.

use integration_tests::{online_cpus, require_kernel, serial};
use memcg_drift::{
    attach::Filter,
    cgroup::{RunGroup, detect_layout},
    plan::Flavour,
    tracer::StatTracer,
    workload::{Workload, workload_binary},
};

fn anon_exact(n: u64, only: Option<Flavour>, test: &str) {
    if !require_kernel(test) {
        return;
    }
    let _serial = serial();
    let hier = detect_layout().unwrap().memory.unwrap();
    let run = RunGroup::create(&hier).unwrap();
    let cg = run.child("stat").unwrap();
    let cpus = online_cpus();
    let k = *cpus.last().unwrap();
    let j = cpus[0];
    let mut w = Workload::spawn(&workload_binary(), &cg, k).unwrap();
    let tracer = StatTracer::start(
        Filter {
            target: Some(cg.id()),
            descendants: false,
        },
        only,
    )
    .unwrap();
    let anon = tracer
        .items
        .value("NR_ANON_MAPPED")
        .expect("this kernel has NR_ANON_MAPPED");

    let before = tracer.snapshot().unwrap();
    w.touch(n).unwrap();
    let touched = tracer.snapshot().unwrap().since(&before);
    let per_cpu = touched.per_cpu(cg.id(), anon);
    for (cpu, d) in per_cpu.iter().enumerate() {
        let want = if cpu == k { n as i64 } else { 0 };
        assert_eq!(
            *d, want,
            "touch {n}: NR_ANON_MAPPED on CPU {cpu} (workload on CPU {k}): {per_cpu:?}"
        );
    }
    assert_eq!(
        per_cpu.get(k).copied(),
        Some(n as i64),
        "CPU {k} missing from {per_cpu:?}"
    );
    assert_eq!(touched.counters.lost(), 0);
    // Stat updates the kernel did not run the programs for (the program already running on
    // that CPU) are read wherever BTF names the counter (5.12+).
    let btf = memcg_drift::kernel::btf::KernelBtf::from_sys_fs().unwrap();
    assert_eq!(
        touched.counters.missed.is_some(),
        btf.has_member("bpf_prog_info", "recursion_misses"),
        "{:?}",
        touched.counters
    );

    w.set_cpu(j).unwrap();
    let before = tracer.snapshot().unwrap();
    let freed = w.free().unwrap();
    assert_eq!(freed, n);
    let window = tracer.snapshot().unwrap().since(&before);
    let per_cpu = window.per_cpu(cg.id(), anon);
    for (cpu, d) in per_cpu.iter().enumerate() {
        let want = if cpu == j { -(n as i64) } else { 0 };
        assert_eq!(
            *d, want,
            "free {n}: NR_ANON_MAPPED on CPU {cpu} (workload on CPU {j}): {per_cpu:?}"
        );
    }
    assert_eq!(window.counters.lost(), 0);
    w.exit().unwrap();
    drop(tracer);
    run.remove().unwrap();
}

#[test]
fn anon_touch_1_page_is_exact() {
    anon_exact(1, None, "anon_touch_1_page_is_exact");
}

#[test]
fn anon_touch_64_pages_is_exact() {
    anon_exact(64, None, "anon_touch_64_pages_is_exact");
}

#[test]
fn anon_touch_1000_pages_is_exact() {
    anon_exact(1000, None, "anon_touch_1000_pages_is_exact");
}

/// The classic-tracepoint fallback (cgroup id from the record) gives the same numbers. Kernels
/// before 6.13 have no memcg tracepoints; there the function probes are exercised instead.
#[test]
fn fallback_flavour_is_exact_too() {
    if !require_kernel("fallback_flavour_is_exact_too") {
        return;
    }
    let has_tp = std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
        && memcg_drift::kernel::btf::KernelBtf::from_sys_fs()
            .unwrap()
            .has_btf_tracepoint("mod_memcg_lruvec_state");
    let flavour = if has_tp {
        Flavour::Tracepoint
    } else {
        Flavour::Kprobe
    };
    anon_exact(300, Some(flavour), "fallback_flavour_is_exact_too");
}

/// Events of other cgroups are filtered in the kernel and counted, never recorded.
#[test]
fn other_cgroups_are_filtered_not_recorded() {
    if !require_kernel("other_cgroups_are_filtered_not_recorded") {
        return;
    }
    let _serial = serial();
    let hier = detect_layout().unwrap().memory.unwrap();
    let run = RunGroup::create(&hier).unwrap();
    let quiet = run.child("quiet").unwrap();
    let busy = run.child("busy").unwrap();
    let cpu = online_cpus()[0];
    let mut w = Workload::spawn(&workload_binary(), &busy, cpu).unwrap();
    let tracer = StatTracer::start(
        Filter {
            target: Some(quiet.id()),
            descendants: false,
        },
        None,
    )
    .unwrap();
    let before = tracer.snapshot().unwrap();
    w.touch(200).unwrap();
    let window = tracer.snapshot().unwrap().since(&before);
    assert!(
        window.rows.keys().all(|k| k.cgroup_id == quiet.id()),
        "{:?}",
        window.rows.keys()
    );
    assert!(window.counters.filtered >= 200, "{:?}", window.counters);
    w.exit().unwrap();
    drop(tracer);
    run.remove().unwrap();
}

/// With descendants, a child created after attaching is recorded under its own id.
#[test]
fn descendants_created_later_are_recorded() {
    if !require_kernel("descendants_created_later_are_recorded") {
        return;
    }
    let _serial = serial();
    let hier = detect_layout().unwrap().memory.unwrap();
    let run = RunGroup::create(&hier).unwrap();
    let parent = run.child("parent").unwrap();
    let tracer = StatTracer::start(
        Filter {
            target: Some(parent.id()),
            descendants: true,
        },
        None,
    )
    .unwrap();
    let anon = tracer.items.value("NR_ANON_MAPPED").unwrap();
    let child = run.child("parent/late").unwrap();
    let cpu = online_cpus()[0];
    let mut w = Workload::spawn(&workload_binary(), &child, cpu).unwrap();
    let before = tracer.snapshot().unwrap();
    w.touch(128).unwrap();
    let window = tracer.snapshot().unwrap().since(&before);
    assert_eq!(
        window.per_cpu(child.id(), anon).get(cpu).copied(),
        Some(128)
    );
    w.exit().unwrap();
    drop(tracer);
    run.remove().unwrap();
}
