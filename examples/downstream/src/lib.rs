//! Strata's documentation examples, compiled and run as a user's crate would (see Cargo.toml). Each module's
//! doc is one library's crate docs; `cargo test --doc` runs their examples.

#[doc = include_str!(concat!(env!("OUT_DIR"), "/README.md"))]
pub mod readme {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/tensor.md"))]
pub mod tensor {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/report.md"))]
pub mod report {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/data.md"))]
pub mod data {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/icl.md"))]
pub mod icl {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/saliency.md"))]
pub mod saliency {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/datamodels.md"))]
pub mod datamodels {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/transformer.md"))]
pub mod transformer {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/train.md"))]
pub mod train {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/growth.md"))]
pub mod growth {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/salt.md"))]
pub mod salt {}

#[doc = include_str!(concat!(env!("OUT_DIR"), "/mwp.md"))]
pub mod mwp {}
