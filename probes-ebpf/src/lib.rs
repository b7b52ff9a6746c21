//! Present so that `cargo` sees a library target; the programs live in `main.rs`.
#![no_std]
