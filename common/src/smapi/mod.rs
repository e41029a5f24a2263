//! The SMAPIv3 front end's protocol, shared by the `volume` and `datapath` executables:
//! the exec protocol ([`exec`]: argv\[0\] dispatch, `--json` on stdin, one JSON value on
//! stdout), validation against the embedded JSON Schemas ([`schema`]), the records the
//! operations return ([`wire`]), and the error object ([`error`]). See docs/smapiv3.md.

pub mod error;
pub mod exec;
pub mod schema;
pub mod wire;
