//! Policy bundles: the on-disk model, compilation, the rule index,
//! conditions, evaluation and the bundle's own tests.

pub mod compile;
pub mod condition;
pub mod eval;
pub mod generate;
pub mod index;
pub mod model;
pub mod pattern;
pub mod testing;

pub use compile::{Bundle, BundleError, BundleFiles};
pub use eval::{Outcome, TraceEntry};
