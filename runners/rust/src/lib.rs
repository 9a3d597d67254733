//! Run an algorithm written in Rust on algomesh (docs/runners.md).
//!
//! The algorithm is a program whose `main` hands an [`Algorithm`] to [`serve`], which
//! serves `algomesh.v1.Runner` on the Unix socket its sidecar names:
//!
//! ```no_run
//! use algomesh_runner::{Algorithm, Call, Error, Value};
//!
//! #[derive(Default)]
//! struct Greeter { greeting: String }
//!
//! impl Algorithm for Greeter {
//!     fn load(&mut self) -> Result<(), Error> {
//!         self.greeting = "hello".into();
//!         Ok(())
//!     }
//!     fn apply(&self, call: &Call, input: Value) -> Result<Value, Error> {
//!         call.println("greeting someone");
//!         let name = input.as_text().ok_or_else(|| Error::msg("send text"))?;
//!         Ok(Value::Text(format!("{} {name}", self.greeting)))
//!     }
//! }
//!
//! fn main() {
//!     algomesh_runner::serve(Greeter::default())
//! }
//! ```

mod call;
mod codec;
mod error;
mod server;
mod value;

#[allow(clippy::all)]
#[rustfmt::skip]
mod pb {
    include!("gen/algomesh.v1.rs");
}

pub use call::{Call, CallStdout};
pub use error::{Error, PipeError};
pub use serde_json::{self, json};
pub use server::serve;
pub use value::Value;

/// An algorithm: `load` once per process before any call, `apply` once per call (up to
/// `scaling.concurrency` at once, each on a thread of its own).
pub trait Algorithm: Send + Sync + 'static {
    /// Runs once per process, before any apply (the place to load a model). An error or
    /// a panic is ALGORITHM_LOAD_FAILED.
    fn load(&mut self) -> Result<(), Error> {
        Ok(())
    }

    /// One call. An error or a panic is ALGORITHM_ERROR with its message and backtrace;
    /// a [`PipeError`] is answered as the status it carries.
    fn apply(&self, call: &Call, input: Value) -> Result<Value, Error>;
}

/// An algorithm that is just an apply function.
pub struct FnAlgorithm<F>(pub F);

impl<F> Algorithm for FnAlgorithm<F>
where
    F: Fn(&Call, Value) -> Result<Value, Error> + Send + Sync + 'static,
{
    fn apply(&self, call: &Call, input: Value) -> Result<Value, Error> {
        (self.0)(call, input)
    }
}
