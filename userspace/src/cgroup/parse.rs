//! Pure parsers of cgroup control-file contents.

use std::fmt;

use serde::{Serialize, Serializer, ser::SerializeMap};

use super::CgroupVersion;

/// A parse error without the file name (the reader adds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// The offending line.
    pub content: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {:?}", self.line, self.reason, self.content)
    }
}

impl std::error::Error for ParseError {}

/// The content of a flat-keyed file (`memory.stat`, `memory.events`, v1 `memory.oom_control`):
/// `key value` pairs in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlatKeyed {
    entries: Vec<(String, u64)>,
}

/// `memory.stat`.
pub type MemoryStat = FlatKeyed;
/// `memory.events` (v2) or `memory.oom_control` (v1: `oom_kill_disable`, `under_oom`, `oom_kill`).
pub type MemoryEvents = FlatKeyed;

impl FlatKeyed {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Serialize for FlatKeyed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Parses a flat-keyed file: one `key value` per line, value an unsigned 64-bit integer.
/// Blank lines are skipped; an empty text gives an empty map; a duplicate key is an error.
pub fn parse_flat_keyed(text: &str) -> Result<FlatKeyed, ParseError> {
    let mut entries: Vec<(String, u64)> = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| ParseError {
            line: idx + 1,
            content: line.to_string(),
            reason,
        };
        let mut it = line.split_whitespace();
        let (Some(key), Some(value), None) = (it.next(), it.next(), it.next()) else {
            return Err(bad("expected `key value`".into()));
        };
        let value = value
            .parse::<u64>()
            .map_err(|e| bad(format!("value is not an unsigned 64-bit integer ({e})")))?;
        if entries.iter().any(|(k, _)| k == key) {
            return Err(bad(format!("duplicate key {key}")));
        }
        entries.push((key.to_string(), value));
    }
    Ok(FlatKeyed { entries })
}

/// Parses a single-value file (`memory.current`, `memory.usage_in_bytes`, ...).
pub fn parse_u64_value(text: &str) -> Result<u64, ParseError> {
    let line = text.trim();
    line.parse::<u64>().map_err(|e| ParseError {
        line: 1,
        content: line.to_string(),
        reason: format!("expected an unsigned 64-bit integer ({e})"),
    })
}

/// Limits at or above this read as "unlimited" on v1: the kernel prints
/// `PAGE_COUNTER_MAX * PAGE_SIZE` = `LONG_MAX / PAGE_SIZE * PAGE_SIZE`, which is
/// 9223372036854771712 with 4 KiB pages and lies within 256 KiB of `i64::MAX` for any page size.
const V1_UNLIMITED_MIN: u64 = i64::MAX as u64 - (256 * 1024 - 1);

/// Parses a limit file: v2 `memory.max`/`memory.high` (`max` = unlimited = `None`) or v1
/// `memory.limit_in_bytes` (the huge page-counter maximum = `None`).
pub fn parse_limit(text: &str, version: CgroupVersion) -> Result<Option<u64>, ParseError> {
    if version == CgroupVersion::V2 && text.trim() == "max" {
        return Ok(None);
    }
    let v = parse_u64_value(text)?;
    Ok((version == CgroupVersion::V2 || v < V1_UNLIMITED_MIN).then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_ok() {
        let s = parse_flat_keyed("anon 4096\nfile 0\n\nkernel_stack 16384\n").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.get("anon"), Some(4096));
        assert_eq!(s.get("file"), Some(0));
        assert_eq!(s.get("missing"), None);
        assert_eq!(
            s.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["anon", "file", "kernel_stack"]
        );
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"anon":4096,"file":0,"kernel_stack":16384}"#
        );
        // v1 prints the hierarchical limit as a huge number: it must still parse.
        let s = parse_flat_keyed("hierarchical_memory_limit 9223372036854771712\n").unwrap();
        assert_eq!(
            s.get("hierarchical_memory_limit"),
            Some(9223372036854771712)
        );
    }

    #[test]
    fn flat_keyed_empty() {
        assert!(parse_flat_keyed("").unwrap().is_empty());
        assert!(parse_flat_keyed("\n\n").unwrap().is_empty());
    }

    #[test]
    fn flat_keyed_malformed() {
        let e = parse_flat_keyed("anon 1\nlol\n").unwrap_err();
        assert_eq!((e.line, e.content.as_str()), (2, "lol"));
        let e = parse_flat_keyed("anon 1 2\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_flat_keyed("anon -1\n").unwrap_err();
        assert!(e.reason.contains("unsigned"), "{e}");
        let e = parse_flat_keyed("anon 1\nanon 2\n").unwrap_err();
        assert!(e.reason.contains("duplicate"), "{e}");
    }

    #[test]
    fn flat_keyed_overflow() {
        assert_eq!(
            parse_flat_keyed("x 18446744073709551615").unwrap().get("x"),
            Some(u64::MAX)
        );
        let e = parse_flat_keyed("x 18446744073709551616").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit("max\n", CgroupVersion::V2).unwrap(), None);
        assert_eq!(
            parse_limit("1048576\n", CgroupVersion::V2).unwrap(),
            Some(1 << 20)
        );
        assert_eq!(
            parse_limit("9223372036854771712\n", CgroupVersion::V1).unwrap(),
            None
        );
        // 64 KiB pages: LONG_MAX / 65536 * 65536.
        assert_eq!(
            parse_limit("9223372036854710272\n", CgroupVersion::V1).unwrap(),
            None
        );
        assert_eq!(
            parse_limit("1048576\n", CgroupVersion::V1).unwrap(),
            Some(1 << 20)
        );
        assert!(parse_limit("max\n", CgroupVersion::V1).is_err());
        assert!(parse_limit("", CgroupVersion::V2).is_err());
        assert!(parse_limit("12q", CgroupVersion::V2).is_err());
    }

    #[test]
    fn single_values() {
        assert_eq!(parse_u64_value("123\n").unwrap(), 123);
        assert!(parse_u64_value("1 2").is_err());
        assert!(parse_u64_value("99999999999999999999").is_err());
    }
}
