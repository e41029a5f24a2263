//! The Ceph driver: everything that talks to Ceph or maps its images on this host.
//!
//! - [`cephx`]: cephx key types and the clients that read them (aes256k);
//! - [`conn`]: how to reach a cluster ([`Conn`]) and the one way `rbd`/`ceph` are run;
//! - [`error`]: what a failed call means ([`CephError`], [`Kind`]);
//! - [`rbd`]: typed wrappers, one per `rbd`/`ceph` subcommand the driver uses;
//! - [`krbd`]: kernel RBD mappings (`rbd device map`, sysfs);
//! - [`nbd`]: rbd-nbd mappings (librbd in a daemon, `/dev/nbdN`);
//! - [`qsd`]: the userspace export (`qemu-storage-daemon`, librbd, NBD on a unix socket).
//!
//! This layer knows images and snapshots, never SRs or volumes: it depends only on
//! [`crate::process`].

pub mod cephx;
pub mod conn;
pub mod error;
pub mod krbd;
pub mod nbd;
pub mod qsd;
pub mod rbd;

use std::fmt;

pub use conn::Conn;
pub use error::{classify, CephError, Kind};

/// One RBD image or snapshot: `pool/[namespace/]image[@snap]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageSpec {
    /// The pool.
    pub pool: String,
    /// The RADOS namespace ("" for the pool's default namespace).
    pub namespace: String,
    /// The image.
    pub image: String,
    /// The snapshot, `None` for the image head.
    pub snap: Option<String>,
}

impl fmt::Display for ImageSpec {
    /// The spec `rbd` takes. `pool//image` is not valid: the default namespace is left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/", self.pool)?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}", self.image)?;
        if let Some(snap) = &self.snap {
            write!(f, "@{snap}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_leave_out_the_default_namespace() {
        let mut spec = ImageSpec { pool: "p".to_owned(), namespace: String::new(), image: "i".to_owned(), snap: None };
        assert_eq!(spec.to_string(), "p/i");
        spec.namespace = "n".to_owned();
        spec.snap = Some("s".to_owned());
        assert_eq!(spec.to_string(), "p/n/i@s");
    }
}
