//! Per-architecture metadata, type aliases and TLB instructions.

pub mod aarch64;
pub mod loongarch64;
pub mod riscv;
pub mod x86_64;
