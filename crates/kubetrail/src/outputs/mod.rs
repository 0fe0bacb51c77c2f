//! The outputs: one folder per component. `build` turns an output section into an output.

pub mod file;
pub mod stdout;
