//! placeholder
/// placeholder
pub struct TlbFlush;
/// placeholder
pub struct TlbFlushAll;
