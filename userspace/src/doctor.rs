//! `memcg-drift doctor`: what this kernel offers and how the tool would attach here.
//!
//! Every flavour is decided by a real trial load and attach of a do-nothing program; every hook
//! of the design is planned against the kernel's BTF, kallsyms and tracefs, and the hooks the
//! tool has programs for are attached for real once (then detached) to confirm the plan.

use std::sync::Arc;

use serde::Serialize;

use crate::{
    attach,
    cgroup::{self, CgroupError, Layout},
    kernel::{KernelFacts, btf::BtfError, tracefs::TracefsError},
    plan::{self, Flavour, HookPlan},
};

/// Why a part of the report is unavailable. Serialised as its one-line message.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The kernel's BTF.
    #[error(transparent)]
    Btf(Arc<BtfError>),
    /// tracefs.
    #[error(transparent)]
    Tracefs(TracefsError),
    /// The cgroup layout.
    #[error(transparent)]
    Cgroup(Arc<CgroupError>),
    /// The batch measurement needs the cgroup layout.
    #[error("cgroup layout: {0}")]
    CgroupLayout(Arc<CgroupError>),
    /// No memory controller to measure the batch in.
    #[error("no cgroup memory controller is mounted")]
    NoMemoryController,
    /// The batch measurement needs root.
    #[error("not root: cannot create a cgroup to measure it in")]
    NotRootCgroup,
    /// The batch measurement failed.
    #[error("{0}")]
    ChargeBatch(Box<dyn std::error::Error + Send + Sync>),
}

impl Serialize for Unavailable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One flavour's trial result.
#[derive(Debug, Serialize)]
pub struct FlavourReport {
    /// Flavour.
    pub flavour: Flavour,
    /// Loaded and attached.
    pub usable: bool,
    /// The kernel's error otherwise.
    pub error: Option<String>,
}

/// One hook's plan and confirmation.
#[derive(Debug, Serialize)]
pub struct HookReport {
    /// The plan with every candidate's verdict.
    #[serde(flatten)]
    pub plan: HookPlan,
    /// The flavour and target the tool would use (first candidate whose target exists and
    /// whose flavour works here), `null` if none.
    pub would_use: Option<String>,
    /// For hooks with programs: what really attached in the confirmation run.
    pub attached: Option<String>,
    /// Errors of candidates that passed the plan but failed to attach.
    pub attach_errors: Vec<String>,
}

/// The doctor report.
#[derive(Debug, Serialize)]
pub struct DoctorReport {
    /// Kernel release.
    pub kernel_release: String,
    /// Running as root.
    pub root: bool,
    /// Kernel BTF availability.
    pub btf: Result<String, Unavailable>,
    /// tracefs mount point (or why not).
    pub tracefs: Result<String, Unavailable>,
    /// kprobe PMU present.
    pub kprobe_pmu: bool,
    /// Online CPUs.
    pub cpus_online: usize,
    /// Cgroup layout.
    pub cgroup: Result<Layout, Unavailable>,
    /// `MEMCG_CHARGE_BATCH` measured on this kernel (`workload::batch`), or why not.
    pub charge_batch: Result<crate::workload::batch::ChargeBatch, Unavailable>,
    /// Flavour trials.
    pub flavours: Vec<FlavourReport>,
    /// Hooks.
    pub hooks: Vec<HookReport>,
    /// Milliseconds `trace` needs to attach here, measured the way it attaches: gathering the
    /// kernel facts and the BTF, then loading the probes and attaching every hook of the plan
    /// (the confirmation run); `null` when the confirmation could not run.
    pub attach_ms: Option<f64>,
    /// The tool can run here.
    pub can_run: bool,
    /// What prevents it, if anything.
    pub problems: Vec<String>,
}

/// Gathers the report (needs root for the trials; without root they are reported as failed).
pub fn gather() -> DoctorReport {
    let root = nix::unistd::geteuid().is_root();
    let t_facts = std::time::Instant::now();
    let facts = KernelFacts::gather();
    let aya_btf = aya::Btf::from_sys_fs().ok();
    // The trial loads below are doctor's own; `trace` does not make them.
    let facts_ms = t_facts.elapsed().as_secs_f64() * 1e3;
    let support = if root {
        attach::trial_flavours(&facts, aya_btf.as_ref())
    } else {
        Flavour::ALL
            .iter()
            .map(|f| (*f, Err(attach::AttachError::NotRoot)))
            .collect()
    };
    let flavours = support
        .iter()
        .map(|(f, r)| FlavourReport {
            flavour: *f,
            usable: r.is_ok(),
            error: r.as_ref().err().map(|e| e.to_string()),
        })
        .collect();
    let mut plans: Vec<HookPlan> = plan::hooks()
        .iter()
        .map(|h| plan::plan_hook(h, &facts, &support, None))
        .collect();

    // Confirm the hooks that have programs by attaching them once.
    let mut confirmations = std::collections::BTreeMap::new();
    let mut attach_ms = None;
    if root && let (Ok(kbtf), Some(btf)) = (facts.btf(), aya_btf.as_ref()) {
        let t0 = std::time::Instant::now();
        // With the charge layout too, so the charge programs are verified as trace runs them.
        let loaded = crate::charge::load_for_doctor(kbtf, &facts, &mut plans);
        if let Ok(mut ebpf) = loaded {
            for o in attach::attach_plans(&mut ebpf, &plans, btf, &facts) {
                confirmations.insert(o.id, o);
            }
            attach_ms = Some(facts_ms + t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let hooks: Vec<HookReport> = plans
        .into_iter()
        .map(|p| {
            let would_use = p
                .would_use()
                .map(|v| format!("{} {}", v.candidate.flavour, v.candidate.target));
            let conf = confirmations.remove(p.id);
            HookReport {
                attached: conf
                    .as_ref()
                    .and_then(|o| o.used.as_ref())
                    .map(|u| format!("{} {}", u.flavour, u.target)),
                attach_errors: conf
                    .map(|o| {
                        o.failed
                            .into_iter()
                            .map(|(f, t, e)| format!("{f} {t}: {e}"))
                            .collect()
                    })
                    .unwrap_or_default(),
                would_use,
                plan: p,
            }
        })
        .collect();

    let cgroup = cgroup::detect_layout().map_err(Arc::new);
    let charge_batch = match (&cgroup, root) {
        (Ok(l), true) => match &l.memory {
            Some(h) => crate::workload::batch::charge_batch(h)
                .map_err(|e| Unavailable::ChargeBatch(e.into())),
            None => Err(Unavailable::NoMemoryController),
        },
        (Ok(_), false) => Err(Unavailable::NotRootCgroup),
        (Err(e), _) => Err(Unavailable::CgroupLayout(e.clone())),
    };
    let mut problems = Vec::new();
    if !root {
        problems.push(
            "not running as root: loading eBPF programs needs CAP_BPF and CAP_PERFMON (or root)"
                .into(),
        );
    }
    if let Err(e) = &facts.btf {
        problems.push(e.to_string());
    }
    match &cgroup {
        Ok(l) if l.memory.is_none() => {
            problems.push("no cgroup memory controller is mounted".into())
        }
        Ok(_) => {}
        Err(e) => problems.push(format!("cgroup layout: {e}")),
    }
    if root
        && !hooks
            .iter()
            .filter(|h| h.plan.group == plan::Group::Stat)
            .any(|h| h.attached.is_some())
    {
        problems.push("no stat-path hook attaches on this kernel".into());
    }
    DoctorReport {
        kernel_release: facts.release.clone(),
        root,
        btf: facts
            .btf
            .as_ref()
            .map(|_| crate::kernel::btf::VMLINUX_BTF.to_string())
            .map_err(|e| Unavailable::Btf(e.clone())),
        tracefs: facts
            .tracefs
            .as_ref()
            .map(|t| {
                format!(
                    "{}{}",
                    t.root().display(),
                    if t.mounted_by_us() {
                        " (mounted by memcg-drift for this run)"
                    } else {
                        ""
                    }
                )
            })
            .map_err(|e| Unavailable::Tracefs(e.clone())),
        kprobe_pmu: facts.kprobe_pmu,
        cpus_online: aya::util::online_cpus().map(|c| c.len()).unwrap_or(0),
        cgroup: cgroup.map_err(Unavailable::Cgroup),
        charge_batch,
        flavours,
        hooks,
        attach_ms,
        can_run: problems.is_empty(),
        problems,
    }
}

/// Renders the text form.
pub fn render_text(r: &DoctorReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let res = |r: &Result<String, Unavailable>| match r {
        Ok(v) => v.clone(),
        Err(e) => format!("UNAVAILABLE: {e}"),
    };
    let _ = writeln!(
        s,
        "kernel      {}  ({} CPUs online, root: {})",
        r.kernel_release,
        r.cpus_online,
        if r.root { "yes" } else { "no" }
    );
    let _ = writeln!(s, "btf         {}", res(&r.btf));
    let _ = writeln!(s, "tracefs     {}", res(&r.tracefs));
    let _ = writeln!(
        s,
        "kprobes     {}",
        if r.kprobe_pmu {
            "kprobe PMU present"
        } else {
            "absent (no kprobe PMU)"
        }
    );
    match &r.cgroup {
        Ok(l) => {
            let _ = writeln!(s, "cgroups     {}", l.describe());
        }
        Err(e) => {
            let _ = writeln!(s, "cgroups     UNAVAILABLE: {e}");
        }
    }
    let _ = match &r.charge_batch {
        Ok(b) => writeln!(s, "batch       {} pages ({})", b.pages, b.source),
        Err(e) => writeln!(s, "batch       UNAVAILABLE: {e}"),
    };
    let _ = writeln!(s, "\nprogram flavours (trial load + attach):");
    for f in &r.flavours {
        let state = if f.usable {
            "usable".to_string()
        } else {
            format!("UNUSABLE: {}", f.error.as_deref().unwrap_or(""))
        };
        // The full error stays in --json; the text keeps to 100 columns.
        let _ = writeln!(
            s,
            "{}",
            clip(&format!("  {:<15} {state}", f.flavour.name()), 100)
        );
    }
    let _ = writeln!(s, "\nhooks:");
    for h in &r.hooks {
        let state = match (&h.attached, &h.would_use) {
            (Some(a), _) => format!("attached via {a}"),
            (None, Some(w))
                if h.plan
                    .candidates
                    .iter()
                    .any(|c| c.candidate.program.is_some()) =>
            {
                format!("would use {w}, but attaching failed")
            }
            (None, Some(w)) => format!("would use {w} (no program yet)"),
            (None, None) => "UNAVAILABLE".to_string(),
        };
        let _ = writeln!(s, "  {:<22} {}", h.plan.id, clip(&state, 76));
        if h.attached.is_none() {
            let _ = writeln!(
                s,
                "{}",
                clip(
                    &format!("      without it the reports lose: {}", h.plan.loss),
                    100
                )
            );
        }
        for c in &h.plan.candidates {
            // Two programs for one flavour and target (e.g. drain_stock's two layouts): name
            // the program so the rows can be told apart.
            let twins = h
                .plan
                .candidates
                .iter()
                .filter(|o| {
                    o.candidate.flavour == c.candidate.flavour
                        && o.candidate.target == c.candidate.target
                })
                .count();
            let target = match c.candidate.program {
                Some(p) if twins > 1 => format!("{} ({p})", c.candidate.target),
                _ => c.candidate.target.to_string(),
            };
            let line = format!(
                "      {:<14} {:<36} {}",
                c.candidate.flavour.name(),
                target,
                c.rejected.as_deref().unwrap_or("ok")
            );
            let _ = writeln!(s, "{}", clip(&line, 100));
        }
        for e in &h.attach_errors {
            let _ = writeln!(s, "{}", clip(&format!("      attach failed: {e}"), 100));
        }
    }
    if let Some(ms) = r.attach_ms {
        let _ = writeln!(
            s,
            "\nattach: {ms:.0} ms to gather the kernel facts, load the probes and attach every hook \
             of the plan (as trace does)"
        );
    }
    let _ = writeln!(s);
    if r.can_run {
        let _ = writeln!(s, "verdict: memcg-drift can run here");
    } else {
        let _ = writeln!(s, "verdict: memcg-drift cannot run here:");
        for p in &r.problems {
            let _ = writeln!(s, "  - {p}");
        }
    }
    s
}

/// Cuts `s` to `width` characters, marking the cut.
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(width - 3).collect::<String>())
    }
}
