//! placeholder
/// placeholder
pub struct PageTable64;
