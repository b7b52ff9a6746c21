//! Values people type: sizes (`32M`), durations (`500ms`), CPU lists (`0-3,8`). Pure parsers
//! shared by the command line and the experiments; every error is one line, with the input
//! quoted and its control characters escaped.

use std::time::Duration;

/// Why a size, duration or CPU list does not parse. Each message is one line and quotes the
/// input with its control characters escaped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnitsError {
    /// Not a number of bytes with an optional binary suffix.
    #[error("`{}` is not a size like 32M, 512K, 1G or a number of bytes", .0.escape_debug())]
    NotSize(String),
    /// The size does not fit in 64 bits.
    #[error("`{}` is too large", .0.escape_debug())]
    TooLarge(String),
    /// A bare number of seconds that does not parse.
    #[error(transparent)]
    Seconds(std::num::ParseIntError),
    /// Not a human duration.
    #[error("`{}` is not a duration like 500ms, 5s or 2min ({err})", .input.escape_debug())]
    NotDuration {
        /// The input (trimmed).
        input: String,
        /// humantime's reason.
        err: humantime::DurationError,
    },
    /// A zero duration.
    #[error("duration must be more than zero")]
    ZeroDuration,
    /// An empty element in a CPU list (the whole list is named).
    #[error("`{}`: empty element in CPU list", .0.escape_debug())]
    EmptyCpuElement(String),
    /// An element that is not a CPU number.
    #[error("`{}` is not a CPU number", .0.escape_debug())]
    NotCpu(String),
    /// A range `b-a` with `b > a`.
    #[error("`{}`: range ends before it starts", .0.escape_debug())]
    BackwardRange(String),
}

/// Parses a size: bytes (`1048576`) or a number with a binary suffix `K`, `M`, `G`, `T`
/// (`512K`, `32M`, `1G`; `KiB`/`MB` spellings and lower case accepted).
pub fn parse_size(s: &str) -> Result<u64, UnitsError> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let bad = || UnitsError::NotSize(s.to_string());
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
        .ok_or_else(|| UnitsError::TooLarge(s.to_string()))
}

/// Parses a human duration (`500ms`, `5s`, `1min`); a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, UnitsError> {
    let s = s.trim();
    let d = if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        s.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(UnitsError::Seconds)
    } else {
        humantime::parse_duration(s).map_err(|err| UnitsError::NotDuration {
            input: s.to_string(),
            err,
        })
    }?;
    if d.is_zero() {
        return Err(UnitsError::ZeroDuration);
    }
    Ok(d)
}

/// Parses a CPU list (`0-3,8,10-11`); sorted, without duplicates. Errors are one line (the
/// input is quoted with control characters escaped).
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, UnitsError> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(UnitsError::EmptyCpuElement(s.to_string()));
        }
        let num = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| UnitsError::NotCpu(x.to_string()))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if b < a {
                    return Err(UnitsError::BackwardRange(part.to_string()));
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
        assert!(parse_size("12q").unwrap_err().to_string().contains("12q"));
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
        assert!(parse_duration("5x").unwrap_err().to_string().contains("5x"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,8"), Ok(vec![0, 1, 2, 3, 8]));
        assert_eq!(parse_cpu_list("1,1,0"), Ok(vec![0, 1]));
        assert!(
            parse_cpu_list("3-1")
                .unwrap_err()
                .to_string()
                .contains("3-1")
        );
        assert!(parse_cpu_list("x").unwrap_err().to_string().contains("`x`"));
        assert!(parse_cpu_list("0,,1").is_err());
    }
}
