//! Values people type: sizes (`32M`), durations (`500ms`), CPU lists (`0-3,8`). Pure parsers
//! shared by the command line and the experiments; every error is one line, with the input
//! quoted and its control characters escaped.

use std::time::Duration;

/// Parses a size: bytes (`1048576`) or a number with a binary suffix `K`, `M`, `G`, `T`
/// (`512K`, `32M`, `1G`; `KiB`/`MB` spellings and lower case accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let bad = || {
        format!(
            "`{}` is not a size like 32M, 512K, 1G or a number of bytes",
            s.escape_debug()
        )
    };
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{}` is too large", s.escape_debug()))
}

/// Parses a human duration (`500ms`, `5s`, `1min`); a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        s.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| e.to_string())
    } else {
        humantime::parse_duration(s).map_err(|e| {
            format!(
                "`{}` is not a duration like 500ms, 5s or 2min ({e})",
                s.escape_debug()
            )
        })
    }?;
    if d.is_zero() {
        return Err("duration must be more than zero".into());
    }
    Ok(d)
}

/// Parses a CPU list (`0-3,8,10-11`); sorted, without duplicates. Errors are one line (the
/// input is quoted with control characters escaped).
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("`{}`: empty element in CPU list", s.escape_debug()));
        }
        let num = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{}` is not a CPU number", x.escape_debug()))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if b < a {
                    return Err(format!(
                        "`{}`: range ends before it starts",
                        part.escape_debug()
                    ));
                }
                v.extend(a..=b);
            }
            None => v.push(num(part)?),
        }
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32M"), Ok(32 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("2m"), Ok(2 << 20));
        assert!(parse_size("12q").unwrap_err().contains("12q"));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5x").unwrap_err().contains("5x"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,8"), Ok(vec![0, 1, 2, 3, 8]));
        assert_eq!(parse_cpu_list("1,1,0"), Ok(vec![0, 1]));
        assert!(parse_cpu_list("3-1").unwrap_err().contains("3-1"));
        assert!(parse_cpu_list("x").unwrap_err().contains("`x`"));
        assert!(parse_cpu_list("0,,1").is_err());
    }
}
