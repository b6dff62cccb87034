//! A `ureq::TlsConnector` over a [`rustls::ClientConfig`] of this crate: ureq 2's own `tls`
//! feature would compile the `ring` provider beside aws-lc-rs.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;
use ureq::{ReadWrite, TlsConnector};

/// Give it to `ureq::AgentBuilder::tls_connector` to reach `https://` addresses.
pub struct UreqTls(pub Arc<ClientConfig>);

struct TlsStream(StreamOwned<ClientConnection, Box<dyn ReadWrite>>);

impl TlsConnector for UreqTls {
    fn connect(
        &self,
        dns_name: &str,
        mut io: Box<dyn ReadWrite>,
    ) -> Result<Box<dyn ReadWrite>, ureq::Error> {
        let host = dns_name.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host)
            .map_err(|e| failed(format!("{host:?} is no server name ({e})")))?
            .to_owned();
        let mut connection =
            ClientConnection::new(self.0.clone(), name).map_err(|e| failed(format!("tls: {e}")))?;
        connection
            .complete_io(&mut io)
            .map_err(|e| failed(format!("tls handshake with {host}: {e}")))?;
        Ok(Box::new(TlsStream(StreamOwned::new(connection, io))))
    }
}

/// ureq builds its own errors privately: an I/O error carries the message.
fn failed(message: String) -> ureq::Error {
    ureq::Error::from(io::Error::new(io::ErrorKind::ConnectionAborted, message))
}

impl ReadWrite for TlsStream {
    fn socket(&self) -> Option<&TcpStream> {
        self.0.get_ref().socket()
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf) {
            // A peer closing without close_notify after a complete answer is an end of stream.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsStream")
    }
}
