//! The domain: its types, its one error enum, token formats and the field rules. No I/O here
//! except the OS random source that `token` draws from.

pub mod error;
pub mod json;
pub mod model;
pub mod page;
pub mod token;
pub mod validate;
