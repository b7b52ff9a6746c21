//! Facts from the running kernel's BTF (`/sys/kernel/btf/vmlinux`): functions, BTF tracepoint
//! typedefs, enum values, struct member offsets and per-CPU variable offsets.
//!
//! Parsing is done by the `btf-rs` crate (retis-org; parses base and split BTF, all kinds
//! including ENUM64 and DATASEC); aya-obj exposes only existence checks, not member offsets
//! or enum values. This module answers questions by name and never hard-codes a layout.
//!
//! The kernel's BTF is opened with btf-rs's mmap backend: it indexes the types' offsets and
//! parses a type only when asked (the cache backend parses and allocates all of the ~150,000
//! types up front, and frees them at drop: 75 ms of the 150 ms `explain` took here, issue 11).
//! Lookups by name then scan the names, so each name's answer is memoised. Where the kernel
//! does not let its BTF file be mapped (before 6.16), a private copy in a memfd is mapped
//! instead; the cache backend stays the last resort and the route for in-memory blobs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering},
};

use btf_rs::{Backend, Btf, BtfType, Type};

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Errors while opening BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The file is missing (kernel without CONFIG_DEBUG_INFO_BTF) or unreadable.
    #[error(
        "cannot read kernel BTF at {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
    )]
    Read {
        /// The path tried.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The blob does not parse.
    #[error("cannot parse kernel BTF at {path}: {msg}")]
    Parse {
        /// The path tried.
        path: String,
        /// The parser's message.
        msg: String,
    },
}

impl BtfError {
    /// The same error naming `path` as the blob that did not parse.
    fn at(self, path: &Path) -> Self {
        match self {
            BtfError::Parse { msg, .. } => BtfError::Parse {
                path: path.display().to_string(),
                msg,
            },
            other => other,
        }
    }
}

/// A parsed kernel BTF.
pub struct KernelBtf {
    btf: Btf,
    /// Types by name, as looked up so far (each first lookup scans every name).
    by_name: Mutex<HashMap<String, Vec<Type>>>,
    /// Scans of all names made so far (one per [`KernelBtf::prefetch`], one per name looked
    /// up that no prefetch covered).
    scans: AtomicUsize,
}

impl std::fmt::Debug for KernelBtf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelBtf")
    }
}

impl KernelBtf {
    /// Opens the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// `bytes` copied into a memfd and opened with the mmap backend (which opens by path),
    /// for kernels whose BTF file cannot be mapped. `None` when any step fails.
    pub fn mapped(bytes: &[u8]) -> Option<Self> {
        use std::io::Write;
        let fd = nix::sys::memfd::memfd_create(
            c"memcg-drift-btf",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .ok()?;
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes).ok()?;
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
        Btf::from_file_with_backend(path, Backend::Mmap)
            .ok()
            .map(Self::new)
    }

    /// Opens a BTF file: mapped where the file can be (the kernel's own from 6.16), else a
    /// mapped copy of it, else parsed whole.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        if let Ok(btf) = Btf::from_file_with_backend(path, Backend::Mmap) {
            return Ok(Self::new(btf));
        }
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        match Self::mapped(&bytes) {
            Some(btf) => Ok(btf),
            None => Self::from_bytes(&bytes).map_err(|e| e.at(path)),
        }
    }

    /// Parses a BTF blob (used by tests with generated BTF).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BtfError> {
        let btf = Btf::from_bytes(bytes).map_err(|e| BtfError::Parse {
            path: "<bytes>".into(),
            msg: e.to_string(),
        })?;
        Ok(Self::new(btf))
    }

    fn new(btf: Btf) -> Self {
        Self {
            btf,
            by_name: Mutex::new(HashMap::new()),
            scans: AtomicUsize::new(0),
        }
    }

    /// Looks up every type named in `names` in ONE scan of the names (a lookup by name scans
    /// them all: 0.7 ms each on a 6.18 kernel's BTF), so the lookups that follow are answered
    /// from memory. A caller that asks for a name it did not prefetch still gets the right
    /// answer, one scan later.
    pub fn prefetch(&self, names: &[&str]) {
        let pattern = names
            .iter()
            .map(|n| regex::escape(n))
            .collect::<Vec<_>>()
            .join("|");
        let Ok(re) = regex::Regex::new(&format!("^(?:{pattern})$")) else {
            return;
        };
        self.scans.fetch_add(1, Ordering::Relaxed);
        let Ok(mut ids) = self.btf.resolve_ids_by_regex(&re) else {
            return;
        };
        // In id order, as a lookup by name returns them (the cache backend's regex walk is
        // in hash order).
        ids.sort_unstable();
        let mut found: HashMap<String, Vec<Type>> =
            names.iter().map(|n| (n.to_string(), Vec::new())).collect();
        for id in ids {
            let Ok(t) = self.btf.resolve_type_by_id(id) else {
                continue;
            };
            let name = t.as_btf_type().map(|b| self.name_of(b)).unwrap_or_default();
            if let Some(v) = found.get_mut(&name) {
                v.push(t);
            }
        }
        let mut memo = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        for (name, types) in found {
            memo.entry(name).or_insert(types);
        }
    }

    /// Scans of all names made so far (tests check that a prefetch covers a resolver).
    pub fn scans(&self) -> usize {
        self.scans.load(Ordering::Relaxed)
    }

    fn types(&self, name: &str) -> Vec<Type> {
        let mut memo = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        memo.entry(name.to_string())
            .or_insert_with(|| {
                self.scans.fetch_add(1, Ordering::Relaxed);
                self.btf.resolve_types_by_name(name).unwrap_or_default()
            })
            .clone()
    }

    fn name_of(&self, t: &dyn BtfType) -> String {
        self.btf.resolve_name(t).unwrap_or_default()
    }

    /// True if the kernel has a BTF FUNC of this name (a candidate for fentry/fexit).
    pub fn has_func(&self, name: &str) -> bool {
        self.types(name).iter().any(|t| matches!(t, Type::Func(_)))
    }

    /// True if the kernel has the BTF tracepoint `name` (typedef `btf_trace_<name>`), which is
    /// what tp_btf and raw tracepoints attach to.
    pub fn has_btf_tracepoint(&self, name: &str) -> bool {
        self.types(&format!("btf_trace_{name}"))
            .iter()
            .any(|t| matches!(t, Type::Typedef(_)))
    }

    /// All enumerators of the enum `name` as (name, value), in declaration order.
    pub fn enum_values(&self, name: &str) -> Option<Vec<(String, i64)>> {
        self.types(name).into_iter().find_map(|t| match t {
            Type::Enum(e) => Some(
                e.members
                    .iter()
                    .map(|m| (self.name_of(m), i64::from(m.val() as i32)))
                    .collect(),
            ),
            Type::Enum64(e) => Some(
                e.members
                    .iter()
                    .map(|m| (self.name_of(m), m.val() as i64))
                    .collect(),
            ),
            _ => None,
        })
    }

    /// The value of one enumerator.
    pub fn enum_value(&self, enum_name: &str, member: &str) -> Option<i64> {
        self.enum_values(enum_name)?
            .into_iter()
            .find(|(n, _)| n == member)
            .map(|(_, v)| v)
    }

    /// The value of an enumerator declared in an anonymous enum, such as `CSS_ONLINE` in
    /// `enum { CSS_NO_REF, CSS_ONLINE, ... }` (include/linux/cgroup-defs.h).
    pub fn anon_enumerator(&self, member: &str) -> Option<i64> {
        self.types("").into_iter().find_map(|t| match t {
            Type::Enum(e) => e
                .members
                .iter()
                .find(|m| self.name_of(*m) == member)
                .map(|m| i64::from(m.val() as i32)),
            Type::Enum64(e) => e
                .members
                .iter()
                .find(|m| self.name_of(*m) == member)
                .map(|m| m.val() as i64),
            _ => None,
        })
    }

    /// Size in bytes of `struct <name>` (or union).
    pub fn struct_size(&self, name: &str) -> Option<u64> {
        self.find_struct(name).map(|s| s.size() as u64)
    }

    /// Size in bytes of a type, following typedefs and qualifiers (pointers are 8 bytes:
    /// the tool runs on 64-bit kernels only).
    fn type_size(&self, t: Type) -> Option<u64> {
        match self.strip(t)? {
            Type::Int(i) => Some(i.size() as u64),
            Type::Ptr(_) => Some(8),
            Type::Struct(s) | Type::Union(s) => Some(s.size() as u64),
            Type::Enum(e) => Some(e.size() as u64),
            Type::Enum64(e) => Some(e.size() as u64),
            Type::Array(a) => {
                let elem = self.btf.resolve_chained_type(&a).ok()?;
                Some(self.type_size(elem)? * a.len() as u64)
            }
            _ => None,
        }
    }

    /// Size in bytes of a member path's type (an array member's whole size).
    pub fn member_size(&self, struct_name: &str, path: &str) -> Option<u64> {
        let (_, t) = self.member_info(struct_name, path)?;
        self.type_size(t)
    }

    /// True if the member path is a pointer, false if it is anything else, `None` if absent.
    pub fn member_is_pointer(&self, struct_name: &str, path: &str) -> Option<bool> {
        let (_, t) = self.member_info(struct_name, path)?;
        Some(matches!(self.strip(t)?, Type::Ptr(_)))
    }

    /// The struct (or union) called `name`, skipping forward declarations.
    fn find_struct(&self, name: &str) -> Option<btf_rs::Struct> {
        self.types(name).into_iter().find_map(|t| match t {
            Type::Struct(s) | Type::Union(s) => Some(s),
            _ => None,
        })
    }

    /// Follows typedef/const/volatile/restrict/type-tag to the underlying type.
    fn strip(&self, mut t: Type) -> Option<Type> {
        for _ in 0..16 {
            match &t {
                Type::Typedef(x) => t = self.btf.resolve_chained_type(x).ok()?,
                Type::Volatile(x) | Type::Const(x) | Type::Restrict(x) => {
                    t = self.btf.resolve_chained_type(x).ok()?
                }
                Type::TypeTag(x) => t = self.btf.resolve_chained_type(x).ok()?,
                _ => return Some(t),
            }
        }
        None
    }

    /// Finds member `name` in `s`, descending into anonymous structs and unions; returns its
    /// byte offset and type.
    fn member(&self, s: &btf_rs::Struct, name: &str) -> Option<(u64, Type)> {
        for m in &s.members {
            let mname = self.name_of(m);
            let off = u64::from(m.bit_offset()) / 8;
            if mname == name {
                return Some((off, self.btf.resolve_chained_type(m).ok()?));
            }
            if mname.is_empty() {
                let inner = self.strip(self.btf.resolve_chained_type(m).ok()?)?;
                if let Type::Struct(is) | Type::Union(is) = inner
                    && let Some((o, t)) = self.member(&is, name)
                {
                    return Some((off + o, t));
                }
            }
        }
        None
    }

    /// Byte offset of a member path such as `"css.cgroup"` inside `struct <name>`. Nested
    /// components must be embedded structs (not pointers). `None` when any part is missing.
    pub fn member_offset(&self, struct_name: &str, path: &str) -> Option<u64> {
        self.member_info(struct_name, path).map(|(o, _)| o)
    }

    /// True if the struct has the member path.
    pub fn has_member(&self, struct_name: &str, path: &str) -> bool {
        self.member_info(struct_name, path).is_some()
    }

    fn member_info(&self, struct_name: &str, path: &str) -> Option<(u64, Type)> {
        let mut s = self.find_struct(struct_name)?;
        let mut total = 0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let (off, t) = self.member(&s, part)?;
            total += off;
            if parts.peek().is_none() {
                return Some((total, t));
            }
            match self.strip(t)? {
                Type::Struct(inner) | Type::Union(inner) => s = inner,
                _ => return None,
            }
        }
        None
    }

    /// Number of elements of an array member (e.g. `memcg_stock_pcp.nr_pages`).
    pub fn array_len(&self, struct_name: &str, path: &str) -> Option<u32> {
        let (_, t) = self.member_info(struct_name, path)?;
        match self.strip(t)? {
            Type::Array(a) => u32::try_from(a.len()).ok(),
            _ => None,
        }
    }

    /// True if argument `idx` of the BTF tracepoint `name` is a pointer, false if it is not,
    /// `None` if the tracepoint or the argument is absent. `btf_trace_<name>` is a pointer to
    /// a function whose first parameter is the hidden `void *` context, so the tracepoint's
    /// argument `idx` is parameter `idx + 1`.
    pub fn tracepoint_arg_is_pointer(&self, name: &str, idx: usize) -> Option<bool> {
        let td = self
            .types(&format!("btf_trace_{name}"))
            .into_iter()
            .find(|t| matches!(t, Type::Typedef(_)))?;
        let Type::Ptr(p) = self.strip(td)? else {
            return None;
        };
        let Type::FuncProto(fp) = self.btf.resolve_chained_type(&p).ok()? else {
            return None;
        };
        let param = fp.parameters.get(idx + 1)?;
        let t = self.btf.resolve_chained_type(param).ok()?;
        Some(matches!(self.strip(t)?, Type::Ptr(_)))
    }

    /// Offset of a per-CPU variable inside the `.data..percpu` section.
    pub fn percpu_var_offset(&self, var: &str) -> Option<u64> {
        let sec = self
            .types(".data..percpu")
            .into_iter()
            .find_map(|t| match t {
                Type::Datasec(d) => Some(d),
                _ => None,
            })?;
        sec.variables.iter().find_map(|v| {
            let t = self.btf.resolve_chained_type(v).ok()?;
            let Type::Var(var_t) = t else { return None };
            (self.name_of(&var_t) == var).then(|| u64::from(v.offset()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These run against the machine's own BTF; without it they report and return (the
    /// layout logic itself is covered by the generated-BTF tests of the ledger work).
    fn kernel() -> Option<KernelBtf> {
        match KernelBtf::from_sys_fs() {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("skipping: {e}");
                None
            }
        }
    }

    #[test]
    fn resolves_stat_items_and_offsets_from_running_kernel() {
        let Some(btf) = kernel() else { return };
        let nodes = btf.enum_values("node_stat_item").expect("node_stat_item");
        assert!(nodes.iter().any(|(n, _)| n == "NR_ANON_MAPPED"));
        let swap = btf
            .enum_value("memcg_stat_item", "MEMCG_SWAP")
            .expect("MEMCG_SWAP");
        // memcg_stat_item continues where node_stat_item ends (include/linux/memcontrol.h).
        assert_eq!(
            Some(swap),
            btf.enum_value("node_stat_item", "NR_VM_NODE_STAT_ITEMS")
        );
        assert!(btf.member_offset("cgroup_subsys_state", "cgroup").is_some());
        assert!(btf.member_offset("mem_cgroup", "css").is_some());
        assert!(btf.has_func("page_counter_try_charge"));
        assert!(!btf.has_func("no_such_function_here"));
        assert!(!btf.has_member("mem_cgroup", "no_such_member"));
    }

    #[test]
    fn bad_blob_is_an_error() {
        assert!(KernelBtf::from_bytes(b"not btf").is_err());
    }
}
