//! Merging objects: strategic merge patch ([`strategic`]) and server-side apply with managed
//! fields ([`apply`]).
//!
//! Both walk objects with a [`TypeSchema`](crate::schema::TypeSchema), which tells them how
//! each list merges and what each field is.

pub mod apply;
pub mod fieldpath;
mod managed;
pub mod strategic;
mod typed;

pub use apply::{ApplyError, Conflict, WriteScope, apply, apply_with, track_update, track_update_with};
pub use fieldpath::{FieldSet, PathElement};
pub use strategic::{PatchError, strategic_merge};
