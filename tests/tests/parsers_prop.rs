//! Property tests of every parser that reads text a user or the kernel hands over (issue 16):
//! sizes, durations, CPU lists, flat-keyed control files (memory.stat, memory.events, owner
//! markers), limits, mountinfo, `/proc/<pid>/cgroup`, `/proc/cgroups`, the kernel's OOM report
//! and run records.
//! Each gets arbitrary text (never a panic; errors are one line) and generated valid input (the
//! value it encodes comes back). No kernel needed.

use std::time::Duration;

use memcg_drift::{
    cgroup::{
        CgroupVersion, parse_flat_keyed, parse_limit, parse_mountinfo, parse_proc_cgroup,
        parse_u64_value,
    },
    charge::parse_proc_cgroups_hierarchy,
    experiment::limit::parse_kmsg,
    units::{parse_cpu_list, parse_duration, parse_size},
};
use proptest::prelude::*;

fn one_line(e: &str) -> bool {
    !e.trim_end().contains('\n')
}

/// Text that looks like what the parsers read: digits, separators, suffixes, keys, and noise.
fn texty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-zA-Z ,:\\-/()\\t\\n.]{0,80}",
        "[0-9]{0,25}[kKmMgGtTbBiI]{0,3}",
        "([0-9]{1,3}(-[0-9]{1,3})?,){0,5}[0-9]{0,3}",
        "([a-z_]{1,12} [0-9\\-]{0,22}\\n){0,6}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn sizes_never_panic(s in texty()) {
        if let Err(e) = parse_size(&s) {
            prop_assert!(one_line(&e.to_string()), "{e}");
        }
    }

    #[test]
    fn sizes_round_trip(n in 0u64..(1 << 24), unit in 0usize..5, spelling in 0usize..3) {
        let (shift, names) = [
            (0, ["", "b", "B"]),
            (10, ["K", "KiB", "kb"]),
            (20, ["M", "MiB", "mb"]),
            (30, ["G", "GiB", "gb"]),
            (40, ["T", "TiB", "tb"]),
        ][unit];
        prop_assert_eq!(parse_size(&format!("{n}{}", names[spelling])), Ok(n << shift));
    }

    #[test]
    fn sizes_overflow_is_an_error(n in (1u64 << 25)..u64::MAX) {
        let text = format!("{n}T");
        prop_assert!(parse_size(&text).is_err());
    }

    #[test]
    fn durations_never_panic(s in texty()) {
        match parse_duration(&s) {
            Ok(d) => prop_assert!(!d.is_zero()),
            Err(e) => prop_assert!(one_line(&e.to_string()), "{e}"),
        }
    }

    #[test]
    fn durations_round_trip(ms in 1u64..10_000_000) {
        prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(Duration::from_millis(ms)));
        prop_assert_eq!(parse_duration(&ms.to_string()), Ok(Duration::from_secs(ms)));
    }

    #[test]
    fn cpu_lists_never_panic(s in texty()) {
        match parse_cpu_list(&s) {
            Ok(v) => prop_assert!(v.windows(2).all(|w| w[0] < w[1])),
            Err(e) => prop_assert!(one_line(&e.to_string()), "{e}"),
        }
    }

    #[test]
    fn cpu_lists_round_trip(ranges in prop::collection::vec((0usize..256, 0usize..8), 1..6)) {
        let text: Vec<String> = ranges
            .iter()
            .map(|&(a, n)| if n == 0 { a.to_string() } else { format!("{a}-{}", a + n) })
            .collect();
        let mut want: Vec<usize> = ranges.iter().flat_map(|&(a, n)| a..=a + n).collect();
        want.sort_unstable();
        want.dedup();
        prop_assert_eq!(parse_cpu_list(&text.join(",")), Ok(want));
    }

    #[test]
    fn flat_keyed_never_panics(s in texty()) {
        if let Err(e) = parse_flat_keyed(&s) {
            prop_assert!(one_line(&e.to_string()), "{e}");
        }
        let _ = parse_u64_value(&s);
        for v in [CgroupVersion::V1, CgroupVersion::V2] {
            let _ = parse_limit(&s, v);
            let _ = parse_proc_cgroup(&s, v);
        }
    }

    #[test]
    fn flat_keyed_round_trip(kv in prop::collection::btree_map("[a-z_]{1,16}", any::<u64>(), 0..20)) {
        let text: String = kv.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        let parsed = parse_flat_keyed(&text).unwrap();
        for (k, v) in &kv {
            prop_assert_eq!(parsed.get(k), Some(*v));
        }
    }

    #[test]
    fn proc_cgroups_never_panics(s in texty(), name in "[a-z_]{0,12}") {
        let _ = parse_proc_cgroups_hierarchy(&s, &name);
    }

    #[test]
    fn proc_cgroups_round_trip(
        rows in prop::collection::btree_map("[a-z_]{1,12}", (any::<u32>(), any::<u32>(), 0u8..2), 1..16),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut text = String::from("#subsys_name\thierarchy\tnum_cgroups\tenabled\n");
        for (name, (h, n, e)) in &rows {
            text.push_str(&format!("{name}\t{h}\t{n}\t{e}\n"));
        }
        let (name, (h, _, _)) = rows.iter().nth(pick.index(rows.len())).unwrap();
        prop_assert_eq!(parse_proc_cgroups_hierarchy(&text, name), Some(u64::from(*h)));
        prop_assert_eq!(parse_proc_cgroups_hierarchy(&text, "#subsys_name"), None);
    }

    #[test]
    fn mountinfo_never_panics(lines in prop::collection::vec(texty(), 0..8)) {
        if let Err(e) = parse_mountinfo(&lines.join("\n")) {
            prop_assert!(one_line(&e.to_string()), "{e}");
        }
    }

    #[test]
    fn mountinfo_with_hostile_fields(
        id in any::<u32>(),
        point in "/[^ \\n]{0,40}",
        opts in "[^ \\n]{0,40}",
        fstype in prop_oneof![Just("cgroup".to_string()), Just("cgroup2".to_string()), "[a-z0-9]{0,8}"],
        extra in "[^\\n]{0,40}",
    ) {
        let line = format!("{id} 1 0:27 / {point} rw,nosuid - {fstype} {fstype} {opts} {extra}");
        if let Err(e) = parse_mountinfo(&line) {
            prop_assert!(one_line(&e.to_string()), "{e}");
        }
    }

    #[test]
    fn oom_reports_never_panic(lines in prop::collection::vec(prop_oneof![
        texty(),
        "memory: usage [0-9kB]{0,12}, limit [0-9kB]{0,12}, failcnt [0-9]{0,6}",
        "Killed process [0-9]{0,7} \\([a-z]{0,8}\\) total-vm:[0-9]{0,9}kB, anon-rss:[0-9]{0,9}kB",
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=\\(null\\),cpuset=/,mems_allowed=0,oom_memcg=[/a-z0-9\\-]{0,30},task_memcg=[/a-z0-9\\-]{0,30},task=[a-z]{0,8},pid=[0-9]{0,7},uid=0",
    ], 0..10)) {
        let _ = parse_kmsg(&lines);
    }

    #[test]
    fn records_never_panic(s in prop_oneof![
        texty(),
        Just("{}".to_string()),
        "\\{\"format\": [0-9]{1,3}, \"experiment\": \"[a-z\\-]{0,12}\"\\}",
        "\\{\"format\": 1, \"run_id\": [0-9\"]{0,5}, \"phases\": \\[\\{\\}\\]\\}",
    ]) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rec.json");
        std::fs::write(&p, &s).unwrap();
        if let Err(e) = memcg_drift::experiment::report::load(&p) {
            prop_assert!(one_line(&format!("{e:#}")), "{e:#}");
        }
    }
}

/// Found by the properties above: the value parsers quoted the input as it was, so a newline or
/// an escape sequence in an argument made the error span lines (or drive the terminal).
#[test]
fn errors_escape_control_characters() {
    for bad in ["a \n", "_ \na \n", "1\u{1b}[2J"] {
        let errs = [
            parse_size(bad).unwrap_err().to_string(),
            parse_duration(bad).unwrap_err().to_string(),
            parse_cpu_list(bad).unwrap_err().to_string(),
        ];
        for e in errs {
            assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e:?}");
        }
    }
}
