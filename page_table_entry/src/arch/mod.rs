//! One module per hardware entry format. Every module compiles on every target.

pub mod aarch64;
pub mod loongarch64;
pub mod riscv;
pub mod x86_64;
