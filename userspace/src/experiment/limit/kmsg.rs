//! `run limit`: the kernel log read from when the run began, and its OOM reports parsed.

use super::*;

/// The kernel log, read from the point it was opened.
pub(super) struct Kmsg {
    pub(super) f: Option<std::fs::File>,
    pub(super) error: Option<String>,
    pub(super) lines: Vec<String>,
}

impl Kmsg {
    pub(super) fn open() -> Kmsg {
        match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
        {
            Ok(f) => {
                // SAFETY: lseek on a descriptor we own; /dev/kmsg supports SEEK_END (skip
                // everything logged so far).
                unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&f), 0, libc::SEEK_END) };
                Kmsg {
                    f: Some(f),
                    error: None,
                    lines: Vec::new(),
                }
            }
            Err(e) => Kmsg {
                f: None,
                error: Some(format!("/dev/kmsg: {e}")),
                lines: Vec::new(),
            },
        }
    }

    /// Reads every record logged since the last call.
    pub(super) fn drain(&mut self) {
        let Some(f) = &mut self.f else { return };
        let mut buf = vec![0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    // "prio,seq,ts,flags;message\n KEY=value..."
                    let first = rec.lines().next().unwrap_or("");
                    if let Some((_, msg)) = first.split_once(';') {
                        self.lines.push(msg.to_string());
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.error = Some(format!("/dev/kmsg: {e}"));
                    break;
                }
            }
        }
    }
}

pub(super) fn field<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let i = s.find(key)? + key.len();
    let rest = &s[i..];
    let end = rest
        .find(|c: char| c == ',' || c.is_whitespace())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

pub(super) fn kib_field(s: &str, key: &str) -> Option<u64> {
    field(s, key)?.trim_end_matches("kB").parse().ok()
}

/// Parses the kernel's OOM reports (mm/oom_kill.c `dump_header`, `dump_oom_victim`,
/// `__oom_kill_process`; mm/memcontrol.c `mem_cgroup_print_oom_meminfo`,
/// `mem_cgroup_print_oom_context`). The dump is rate-limited (`oom_rs`); the `Killed process`
/// line is not.
pub fn parse_kmsg(lines: &[String]) -> Vec<KmsgKill> {
    let mut out: Vec<KmsgKill> = Vec::new();
    let mut usage: Option<(u64, u64, u64)> = None;
    let mut pending: Option<KmsgKill> = None;
    for l in lines {
        if let Some(rest) = l.strip_prefix("memory: usage ") {
            let mut it = rest.split(", ");
            let u = it
                .next()
                .and_then(|x| x.trim_end_matches("kB").parse().ok());
            let lim = it
                .next()
                .and_then(|x| x.strip_prefix("limit "))
                .and_then(|x| x.trim_end_matches("kB").parse().ok());
            let fc = it
                .next()
                .and_then(|x| x.strip_prefix("failcnt "))
                .and_then(|x| x.trim().parse().ok());
            if let (Some(u), Some(lim), Some(fc)) = (u, lim, fc) {
                usage = Some((u, lim, fc));
            }
        } else if l.starts_with("oom-kill:") {
            let pid = field(l, ",pid=").and_then(|p| p.parse().ok()).unwrap_or(0);
            pending = Some(KmsgKill {
                pid,
                comm: field(l, ",task=").unwrap_or("").to_string(),
                oom_memcg: field(l, ",oom_memcg=").map(str::to_string),
                usage_kib: usage.map(|u| u.0),
                limit_kib: usage.map(|u| u.1),
                failcnt: usage.map(|u| u.2),
                rss_kib: None,
            });
            usage = None;
        } else if let Some(i) = l.find("Killed process ") {
            let rest = &l[i + "Killed process ".len()..];
            let pid: u32 = rest
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let comm = rest
                .split_once('(')
                .and_then(|(_, r)| r.rsplit_once(')'))
                .map(|(c, _)| c.to_string())
                .unwrap_or_default();
            let rss = match (
                kib_field(rest, "anon-rss:"),
                kib_field(rest, "file-rss:"),
                kib_field(rest, "shmem-rss:"),
            ) {
                (Some(a), Some(f), Some(s)) => Some((a, f, s)),
                _ => None,
            };
            let mut k = match pending.take() {
                Some(p) if p.pid == pid => p,
                _ => KmsgKill {
                    pid,
                    comm: comm.clone(),
                    ..Default::default()
                },
            };
            if k.comm.is_empty() {
                k.comm = comm;
            }
            k.rss_kib = rss;
            out.push(k);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_oom_report() {
        let lines: Vec<String> = [
            "memcg-drift invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
            "memory: usage 32768kB, limit 32768kB, failcnt 120",
            "memory+swap: usage 32768kB, limit 9007199254740988kB, failcnt 0",
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/memcg-drift/1-2/limited,task_memcg=/memcg-drift/1-2/limited,task=memcg-drift,pid=4242,uid=0",
            "Memory cgroup out of memory: Killed process 4242 (memcg-drift) total-vm:40000kB, anon-rss:31000kB, file-rss:1200kB, shmem-rss:0kB, UID:0 pgtables:120kB oom_score_adj:0",
            "Memory cgroup out of memory: Killed process 77 (other) total-vm:1kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let k = parse_kmsg(&lines);
        assert_eq!(k.len(), 2);
        assert_eq!(k[0].pid, 4242);
        assert_eq!(k[0].comm, "memcg-drift");
        assert_eq!(k[0].oom_memcg.as_deref(), Some("/memcg-drift/1-2/limited"));
        assert_eq!(
            (k[0].usage_kib, k[0].limit_kib, k[0].failcnt),
            (Some(32768), Some(32768), Some(120))
        );
        assert_eq!(k[0].rss_kib, Some((31000, 1200, 0)));
        // A rate-limited dump: only the Killed process line.
        assert_eq!(k[1].pid, 77);
        assert_eq!(k[1].usage_kib, None);
        assert_eq!(k[1].rss_kib, Some((5, 0, 0)));
    }
}
