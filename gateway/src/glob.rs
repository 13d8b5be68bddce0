//! Globs: the one language everywhere a pattern is written, shared with the policies
//! through the SDK (see [`portcullis_policy::glob`]).

pub use portcullis_policy::glob::matches;
