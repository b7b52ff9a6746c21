//! The css tree walk: a cgroup's `struct mem_cgroup` and its descendants, dying ones included.

use super::*;

/// Longest `children` list walked (a guard against a list changing under the walk).
const MAX_LIST: usize = 100_000;
/// Deepest css ancestry followed.
const MAX_DEPTH: usize = 256;
/// Longest cgroup name read.
const MAX_NAME: usize = 256;

/// Why kernel memory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    /// A length the peek program does not take.
    #[error("peek of {0} bytes")]
    Length(usize),
    /// The kernel read failed.
    #[error("kernel address {0:#x} unreadable")]
    Unreadable(u64),
    /// Running the peek program or reading its map failed.
    #[error(transparent)]
    Reader(#[from] ResidueError),
}

/// Why the css tree walk failed.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// Kernel memory could not be read.
    #[error(transparent)]
    Peek(#[from] PeekError),
    /// A cgroup without its kernfs node.
    #[error("cgroup {0:#x} has no kernfs node")]
    NoKernfsNode(u64),
    /// The calling task's `css_set` pointer is null.
    #[error("the tool's task has no css_set")]
    NoCssSet,
    /// The calling task has no memory css.
    #[error("the tool's task has no memory css (memory controller disabled?)")]
    NoMemoryCss,
    /// The css ancestry does not end.
    #[error("css ancestry deeper than {MAX_DEPTH}", MAX_DEPTH = MAX_DEPTH)]
    TooDeep,
    /// A `children` list that does not end.
    #[error("children list of css {0:#x} longer than {MAX_LIST}", MAX_LIST = MAX_LIST)]
    LongList(u64),
    /// No child with the cgroup id on the path.
    #[error(
        "no memory css with cgroup id {id} at depth {depth} (the cgroup was removed, or it \
         has no memory controller)"
    )]
    NotFound {
        /// The cgroup id looked for.
        id: u64,
        /// Its depth below the hierarchy's root (1 for a child of the root).
        depth: usize,
    },
}

/// Reads kernel memory (the residue programs' peek; a fake in tests).
pub trait KernelMem {
    /// `len` bytes at kernel address `addr`.
    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, PeekError>;
    /// `len` bytes at `current + off` (the calling task's `task_struct`).
    fn read_current(&mut self, off: u64, len: usize) -> Result<Vec<u8>, PeekError>;

    /// A little-endian u64 at `addr`.
    fn u64_at(&mut self, addr: u64) -> Result<u64, PeekError> {
        let b = self.read(addr, 8)?;
        Ok(le_u64(&b, 0))
    }
}

/// One memcg of the subtree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemcgNode {
    /// Kernel address of the `struct mem_cgroup` (not serialised into reports).
    #[serde(skip)]
    pub memcg: u64,
    /// Kernel address of its css.
    #[serde(skip)]
    pub css: u64,
    /// The cgroup id (kernfs node id).
    pub cgroup_id: u64,
    /// The directory name (kernfs node name).
    pub name: String,
    /// Index of the parent in [`Tree::nodes`] (`None` for the target).
    pub parent: Option<usize>,
    /// Depth below the target (0 for the target).
    pub depth: u32,
    /// `css.flags` when walked.
    pub css_flags: u32,
    /// `CSS_ONLINE` is set and `CSS_DYING` is not: a live cgroup.
    pub online: bool,
}

/// Live: `CSS_ONLINE` and not `CSS_DYING`. `kill_css` sets `CSS_DYING` at rmdir, the offline
/// (clearing `CSS_ONLINE`) follows asynchronously after an RCU grace period: a removed cgroup
/// counts as dying from its rmdir on, as `css_is_dying()` says.
fn is_live(flags: u32, l: &ResidueLayout) -> bool {
    flags & l.cgroup.css_online != 0 && l.cgroup.css_dying.is_none_or(|d| flags & d == 0)
}

/// The target and its descendants (dying ones included), parents before children.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tree {
    /// The nodes; `nodes[0]` is the target.
    pub nodes: Vec<MemcgNode>,
    /// Descendants found beyond the limit and left out.
    pub left_out: usize,
}

/// The fields of a css the walk needs.
struct Css {
    cgroup: u64,
    parent: u64,
    children_next: u64,
    sibling_next: u64,
    flags: u32,
}

fn read_css(mem: &mut dyn KernelMem, l: &ResidueLayout, css: u64) -> Result<Css, WalkError> {
    let c = &l.cgroup;
    let b = mem.read(css, c.css_span as usize)?;
    Ok(Css {
        cgroup: le_u64(&b, c.css_cgroup as usize),
        parent: le_u64(&b, c.css_parent as usize),
        children_next: le_u64(&b, c.css_children as usize),
        sibling_next: le_u64(&b, c.css_sibling as usize),
        flags: le_u32(&b, c.css_flags as usize),
    })
}

/// `cgroup->kn`: its id and its name pointer.
fn cgroup_kn(
    mem: &mut dyn KernelMem,
    l: &ResidueLayout,
    cgroup: u64,
) -> Result<(u64, u64), WalkError> {
    let kn = mem.u64_at(cgroup + l.cgroup.cgroup_kn)?;
    if kn == 0 {
        return Err(WalkError::NoKernfsNode(cgroup));
    }
    let id = mem.u64_at(kn + l.cgroup.kn_id)?;
    let name = mem.u64_at(kn + l.cgroup.kn_name)?;
    Ok((id, name))
}

fn read_name(mem: &mut dyn KernelMem, addr: u64) -> String {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < MAX_NAME && addr != 0 {
        let Ok(chunk) = mem.read(at, 16) else { break };
        match chunk.iter().position(|&c| c == 0) {
            Some(end) => {
                out.extend_from_slice(&chunk[..end]);
                break;
            }
            None => out.extend_from_slice(&chunk),
        }
        at += 16;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The css of the mounted hierarchy's root: from the calling task's memory css up to the css
/// whose cgroup id is `root_id` (the mount root's inode; inside a cgroup namespace the mount
/// root is not the kernel's root), or to the top when none matches.
fn root_css(mem: &mut dyn KernelMem, l: &ResidueLayout, root_id: u64) -> Result<u64, WalkError> {
    let c = &l.cgroup;
    let cset = le_u64(&mem.read_current(c.task_cgroups, 8)?, 0);
    if cset == 0 {
        return Err(WalkError::NoCssSet);
    }
    let mut css = mem.u64_at(cset + c.css_set_subsys + 8 * c.memory_cgrp_id)?;
    if css == 0 {
        return Err(WalkError::NoMemoryCss);
    }
    for _ in 0..MAX_DEPTH {
        let info = read_css(mem, l, css)?;
        if info.parent == 0 || cgroup_kn(mem, l, info.cgroup).is_ok_and(|(id, _)| id == root_id) {
            return Ok(css);
        }
        css = info.parent;
    }
    Err(WalkError::TooDeep)
}

/// The children of a css, as (child css, its fields).
fn children(
    mem: &mut dyn KernelMem,
    l: &ResidueLayout,
    css: u64,
) -> Result<Vec<(u64, Css)>, WalkError> {
    let head = css + l.cgroup.css_children;
    let mut pos = read_css(mem, l, css)?.children_next;
    let mut out = Vec::new();
    while pos != head && pos != 0 {
        if out.len() >= MAX_LIST {
            return Err(WalkError::LongList(css));
        }
        let child = pos.wrapping_sub(l.cgroup.css_sibling);
        let info = read_css(mem, l, child)?;
        pos = info.sibling_next;
        out.push((child, info));
    }
    Ok(out)
}

/// Finds the css of the cgroup whose path from the hierarchy root (cgroup id `root_id`) has
/// the directory ids `path_ids` (empty: the root itself), then lists it and its descendants,
/// at most `limit` nodes.
pub fn walk(
    mem: &mut dyn KernelMem,
    l: &ResidueLayout,
    root_id: u64,
    path_ids: &[u64],
    limit: usize,
) -> Result<Tree, WalkError> {
    let mut css = root_css(mem, l, root_id)?;
    for (depth, id) in path_ids.iter().enumerate() {
        let mut found = None;
        for (child, info) in children(mem, l, css)? {
            if let Ok((cid, _)) = cgroup_kn(mem, l, info.cgroup)
                && cid == *id
            {
                found = Some(child);
                break;
            }
        }
        css = found.ok_or(WalkError::NotFound {
            id: *id,
            depth: depth + 1,
        })?;
    }
    let info = read_css(mem, l, css)?;
    let (id, name) = cgroup_kn(mem, l, info.cgroup)?;
    let memcg = css.wrapping_sub(l.cgroup.memcg_css);
    let mut tree = Tree::default();
    tree.nodes.push(MemcgNode {
        memcg,
        css,
        cgroup_id: id,
        name: read_name(mem, name),
        parent: None,
        depth: 0,
        css_flags: info.flags,
        online: is_live(info.flags, l),
    });
    // Breadth first, parents before children; a css seen twice (a list changing under the
    // walk) is not added again.
    let mut seen = BTreeSet::from([css]);
    let mut i = 0;
    while i < tree.nodes.len() {
        let (parent_css, depth) = (tree.nodes[i].css, tree.nodes[i].depth);
        for (child, info) in children(mem, l, parent_css)? {
            if !seen.insert(child) {
                continue;
            }
            if tree.nodes.len() >= limit {
                tree.left_out += 1;
                continue;
            }
            let Ok((cid, name)) = cgroup_kn(mem, l, info.cgroup) else {
                continue;
            };
            tree.nodes.push(MemcgNode {
                memcg: child.wrapping_sub(l.cgroup.memcg_css),
                css: child,
                cgroup_id: cid,
                name: read_name(mem, name),
                parent: Some(i),
                depth: depth + 1,
                css_flags: info.flags,
                online: is_live(info.flags, l),
            });
        }
        i += 1;
    }
    Ok(tree)
}
