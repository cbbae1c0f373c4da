//! placeholder
/// placeholder
pub struct Geometry;
