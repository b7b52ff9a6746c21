//! Changes to the machine outside the run's cgroups that the process must undo on every exit
//! path (today: the swap devices `run swap --swapoff` turns off, turned on again, and the
//! memory blocks `run hotplug` takes offline, put back online).
//!
//! [`Undo::push`] registers an action and returns its guard: [`Undo::run`] (or dropping the
//! guard, on an error or while unwinding) runs it once; [`run_pending`] runs every action still
//! registered, which is what the signal thread and the panic hook do (through
//! `cgroup::cleanup_live_runs`). An action runs at most once, outside the registry's lock.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

type Action = Box<dyn FnOnce() + Send>;

static PENDING: Mutex<Vec<(u64, Action)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

fn take(id: Option<u64>) -> Vec<Action> {
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        if id.is_none_or(|id| p[i].0 == id) {
            out.push(p.remove(i).1);
        } else {
            i += 1;
        }
    }
    out
}

/// A registered undo action; runs once, when [`Undo::run`] is called or the guard is dropped,
/// unless [`run_pending`] ran it first.
#[must_use = "dropping the guard runs the action at once"]
#[derive(Debug)]
pub struct Undo {
    id: u64,
}

impl Undo {
    /// Registers `action`.
    pub fn push(action: impl FnOnce() + Send + 'static) -> Undo {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        PENDING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, Box::new(action)));
        Undo { id }
    }

    /// Runs the action now (if nothing ran it yet).
    pub fn run(self) {
        drop(self);
    }

    /// Forgets the action without running it (the caller undid the change itself).
    pub fn disarm(self) {
        drop(take(Some(self.id)));
        std::mem::forget(self);
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        for a in take(Some(self.id)) {
            a();
        }
    }
}

/// Runs every registered action, oldest last (the reverse of registration).
pub fn run_pending() {
    let mut all = take(None);
    while let Some(a) = all.pop() {
        a();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[test]
    fn each_action_runs_exactly_once_on_every_path() {
        let n = Arc::new(AtomicUsize::new(0));
        let counter = |n: &Arc<AtomicUsize>| {
            let n = n.clone();
            move || {
                n.fetch_add(1, Ordering::SeqCst);
            }
        };
        // Dropped: runs.
        drop(Undo::push(counter(&n)));
        assert_eq!(n.load(Ordering::SeqCst), 1);
        // Run explicitly: runs once, not again on drop.
        Undo::push(counter(&n)).run();
        assert_eq!(n.load(Ordering::SeqCst), 2);
        // Disarmed: never runs.
        Undo::push(counter(&n)).disarm();
        run_pending();
        assert_eq!(n.load(Ordering::SeqCst), 2);
        // Run by the cleanup path first: the guard's drop does nothing more.
        let g = Undo::push(counter(&n));
        run_pending();
        assert_eq!(n.load(Ordering::SeqCst), 3);
        drop(g);
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }
}
