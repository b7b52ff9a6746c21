//! Cgroup layout detection, memory-cgroup readers, and the tool's own cgroups. (In progress.)
