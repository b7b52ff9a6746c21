//! The controlled workload process. (In progress.)
