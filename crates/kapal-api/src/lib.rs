//! Kapal's object model.
//!
//! Everything here is pure data and pure functions over `serde_json::Value` objects: the
//! registry of resource kinds, `metav1.Status` errors, label and field selectors, server-side
//! table columns, merge rules for strategic merge patch and server-side apply, OpenAPI
//! documents, and the defaulting and validation of built-in kinds. The API server, controllers
//! and the agent all share it; none of it touches the network or the store.

// `ApiError` is the whole `metav1.Status` a client gets; it is built only on error paths and
// returned once per request, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod defaults;
pub mod fields;
pub mod merge;
pub mod openapi;
pub mod protobuf;
pub mod quota;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod status;
pub mod table;
pub mod validation;

pub use registry::{Gvk, ResourceInfo, Scope};
pub use status::{ApiError, Cause};
