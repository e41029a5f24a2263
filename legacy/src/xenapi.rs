//! The XenAPI calls the legacy driver makes back to xapi: XML-RPC over HTTP on the local
//! unix socket `/var/lib/xcp/xapi` (`CEPHRBD_XAPI_SOCKET` overrides it for tests), with
//! the session xapi passed in the request (docs/smapiv1.md, "XenAPI callbacks"). That session is
//! xapi's to destroy; we never log it out. Replies are `{Status: "Success", Value}` or
//! `{Status: "Failure", ErrorDescription: [code, …]}`; int64 values travel as strings.
//! Every call has a time limit.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use tracing::debug;

use crate::xmlrpc::{self, Value};

/// xapi's local socket.
pub const DEFAULT_SOCKET: &str = "/var/lib/xcp/xapi";

/// A XenAPI call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum XenApiError {
    /// The socket could not be used.
    #[error("cannot talk to xapi on {path}")]
    Io {
        /// The socket path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The reply is not XML-RPC of the expected shape.
    #[error("xapi's reply to {method} cannot be read: {reason}")]
    BadReply {
        /// The method called.
        method: String,
        /// What is wrong.
        reason: String,
    },
    /// xapi answered with a failure.
    #[error("xapi refused {method}: {}", .description.join(" "))]
    Failure {
        /// The method called.
        method: String,
        /// `ErrorDescription`.
        description: Vec<String>,
    },
}

/// A XenAPI session handed to us by xapi.
#[derive(Debug, Clone)]
pub struct Session {
    socket: PathBuf,
    session: String,
    subtask: Option<String>,
    timeout: Duration,
}

impl Session {
    /// The session `session_ref`, making calls as part of task `subtask` if given.
    pub fn new(session_ref: &str, subtask: Option<&str>, timeout: Duration) -> Self {
        let socket =
            std::env::var_os("CEPHRBD_XAPI_SOCKET").map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from);
        Session { socket, session: session_ref.to_owned(), subtask: subtask.map(str::to_owned), timeout }
    }

    /// Calls `method(session, args…)` and returns its `Value`.
    pub fn call(&self, method: &str, args: Vec<Value>) -> Result<Value, XenApiError> {
        let mut params = vec![Value::str(self.session.clone())];
        params.extend(args);
        let body = xmlrpc::call(method, &params);
        debug!(method, "XenAPI call");
        let io = |source| XenApiError::Io { path: self.socket.display().to_string(), source };
        let mut stream = UnixStream::connect(&self.socket).map_err(io)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let mut request = format!(
            "POST / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: cephrbd\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(task) = &self.subtask {
            request.push_str(&format!("Subtask-of: {task}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).and_then(|()| stream.write_all(body.as_bytes())).map_err(io)?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).map_err(io)?;
        let bad = |reason: String| XenApiError::BadReply { method: method.to_owned(), reason };
        let reply = String::from_utf8(reply).map_err(|_| bad("not UTF-8".to_owned()))?;
        let (head, body) = reply.split_once("\r\n\r\n").ok_or_else(|| bad("no HTTP header".to_owned()))?;
        let status = head.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            return Err(bad(format!("HTTP status {status:?}")));
        }
        let envelope =
            xmlrpc::parse_response(body).map_err(|e| bad(e.to_string()))?.map_err(|f| bad(format!("fault {f:?}")))?;
        match envelope.get("Status").and_then(Value::as_str) {
            Some("Success") => envelope.get("Value").cloned().ok_or_else(|| bad("Success without Value".to_owned())),
            Some("Failure") => Err(XenApiError::Failure {
                method: method.to_owned(),
                description: envelope
                    .get("ErrorDescription")
                    .and_then(Value::items)
                    .unwrap_or_default()
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect(),
            }),
            _ => Err(bad("no Status".to_owned())),
        }
    }
}
