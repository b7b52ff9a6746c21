//! A tiny BTF encoder for unit tests: builds raw BTF blobs (the format of
//! `/sys/kernel/btf/vmlinux`, include/uapi/linux/btf.h) describing just the types a test needs,
//! so layout resolvers can be tested on kernel generations the test machine does not run.
//!
//! Only what the tests use is supported: INT, PTR (always to `void`), ARRAY, STRUCT, UNION,
//! ENUM, TYPEDEF, VAR and DATASEC. Type ids are handed out in creation order, starting at 1.

/// BTF kinds (include/uapi/linux/btf.h).
const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const TYPEDEF: u32 = 8;
const VAR: u32 = 14;
const DATASEC: u32 = 15;

/// One member: name (empty for anonymous), type id, byte offset.
pub type Member<'a> = (&'a str, u32, u32);

/// Builds a BTF blob type by type.
#[derive(Debug)]
pub struct BtfBuilder {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Default for BtfBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BtfBuilder {
    /// An empty BTF (type 0 is `void`).
    pub fn new() -> Self {
        Self {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn word(&mut self, w: u32) {
        self.types.extend_from_slice(&w.to_le_bytes());
    }

    /// `struct btf_type`: name, info (vlen | kind << 24 | kflag << 31), size or type.
    fn header(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32) -> u32 {
        let name = self.str(name);
        self.word(name);
        self.word(vlen | (kind << 24));
        self.word(size_or_type);
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// An integer type of `size` bytes (signed).
    pub fn int(&mut self, name: &str, size: u32) -> u32 {
        let id = self.header(name, INT, 0, size);
        // encoding SIGNED (1 << 24), offset 0, bits = size * 8
        self.word((1 << 24) | (size * 8));
        id
    }

    /// `void *`.
    pub fn ptr(&mut self) -> u32 {
        self.header("", PTR, 0, 0)
    }

    /// `elem[n]`, indexed by `index` (an int type id).
    pub fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
        let id = self.header("", ARRAY, 0, 0);
        self.word(elem);
        self.word(index);
        self.word(n);
        id
    }

    fn aggregate(&mut self, kind: u32, name: &str, size: u32, members: &[Member<'_>]) -> u32 {
        let names: Vec<u32> = members.iter().map(|(n, _, _)| self.str(n)).collect();
        let id = self.header(name, kind, members.len() as u32, size);
        for ((_, ty, off), n) in members.iter().zip(names) {
            self.word(n);
            self.word(*ty);
            self.word(off * 8);
        }
        id
    }

    /// A struct of `size` bytes.
    pub fn struct_(&mut self, name: &str, size: u32, members: &[Member<'_>]) -> u32 {
        self.aggregate(STRUCT, name, size, members)
    }

    /// A union of `size` bytes.
    pub fn union_(&mut self, name: &str, size: u32, members: &[Member<'_>]) -> u32 {
        self.aggregate(UNION, name, size, members)
    }

    /// A 4-byte enum (empty name for an anonymous one).
    pub fn enum_(&mut self, name: &str, values: &[(&str, i32)]) -> u32 {
        let names: Vec<u32> = values.iter().map(|(n, _)| self.str(n)).collect();
        let id = self.header(name, ENUM, values.len() as u32, 4);
        for ((_, v), n) in values.iter().zip(names) {
            self.word(n);
            self.word(*v as u32);
        }
        id
    }

    /// `typedef ty name`.
    pub fn typedef(&mut self, name: &str, ty: u32) -> u32 {
        self.header(name, TYPEDEF, 0, ty)
    }

    /// A global variable of type `ty`.
    pub fn var(&mut self, name: &str, ty: u32) -> u32 {
        let id = self.header(name, VAR, 0, ty);
        self.word(1); // BTF_VAR_GLOBAL_ALLOCATED
        id
    }

    /// A data section listing `(var id, offset, size)`.
    pub fn datasec(&mut self, name: &str, size: u32, vars: &[(u32, u32, u32)]) -> u32 {
        let id = self.header(name, DATASEC, vars.len() as u32, size);
        for (v, off, sz) in vars {
            self.word(*v);
            self.word(*off);
            self.word(*sz);
        }
        id
    }

    /// The blob: `struct btf_header` (24 bytes), types, strings.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
        out.push(1); // version
        out.push(0); // flags
        out.extend_from_slice(&24_u32.to_le_bytes()); // hdr_len
        out.extend_from_slice(&0_u32.to_le_bytes()); // type_off
        out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.types.len() as u32).to_le_bytes()); // str_off
        out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::KernelBtf;

    #[test]
    fn generated_blob_parses_and_answers() {
        let mut b = BtfBuilder::new();
        let long = b.int("long", 8);
        let arr = b.array(long, long, 5);
        let inner = b.struct_("", 16, &[("x", long, 0), ("y", long, 8)]);
        let s = b.struct_(
            "thing",
            64,
            &[("a", long, 0), ("", inner, 8), ("v", arr, 24)],
        );
        b.enum_("", &[("ANON_A", 1), ("ANON_B", 16)]);
        b.enum_("named", &[("N_A", 3)]);
        let v = b.var("thing_var", s);
        b.datasec(".data..percpu", 4096, &[(v, 128, 64)]);
        let k = KernelBtf::from_bytes(&b.build()).unwrap();
        assert_eq!(k.member_offset("thing", "y"), Some(16));
        assert_eq!(k.member_offset("thing", "v"), Some(24));
        assert_eq!(k.array_len("thing", "v"), Some(5));
        assert_eq!(k.member_size("thing", "v"), Some(40));
        assert_eq!(k.struct_size("thing"), Some(64));
        assert_eq!(k.anon_enumerator("ANON_B"), Some(16));
        assert_eq!(k.anon_enumerator("N_A"), None);
        assert_eq!(k.enum_value("named", "N_A"), Some(3));
        assert_eq!(k.percpu_var_offset("thing_var"), Some(128));
        assert_eq!(k.member_is_pointer("thing", "a"), Some(false));
    }
}
