//! Tools for the operator and the plugins' self-description: the consistency check of an
//! SR and its safe repairs ([`check`], `volume --check`), the host doctor ([`doctor`],
//! `volume --doctor`), and `Plugin.Query`/`Plugin.diagnostics` ([`plugin`]).

pub mod check;
pub mod doctor;
pub mod plugin;
