//! The domain: its types, its one error enum, token formats and the field rules. No I/O here
//! except the OS random source that `token` draws from.

pub(crate) mod access;
pub(crate) mod audit;
pub(crate) mod error;
pub(crate) mod github_keys;
pub(crate) mod json;
pub(crate) mod model;
pub(crate) mod page;
pub(crate) mod scan;
pub(crate) mod token;
pub(crate) mod validate;
pub(crate) mod webhook;
