//! [`MAX_DEPTH`], the nesting cap both directions of the mapping share.

/// The deepest nesting either direction of the mapping accepts; equal to the
/// codec's default depth cap.
pub const MAX_DEPTH: usize = 256;
