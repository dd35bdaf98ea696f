//! systemd readiness (`Type=notify`): once the member serves clients it
//! sends `READY=1` to the datagram socket named by `$NOTIFY_SOCKET`, as
//! etcd does, so `systemctl start` returns only when the member is usable
//! and units ordered `After=` it start against a working store. Without
//! the variable (not run by systemd, or `Type=simple`) nothing is sent.

use std::os::unix::net::UnixDatagram;

/// The environment variable systemd sets for `Type=notify` services.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tells systemd this member is ready. Failures are logged, never fatal:
/// the member serves either way.
pub fn ready() {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    match send(&path.to_string_lossy(), b"READY=1") {
        Ok(()) => tracing::info!("notified systemd that this member is ready"),
        Err(e) => tracing::warn!(
            error = %e,
            socket = %path.to_string_lossy(),
            "could not notify systemd of readiness"
        ),
    }
}

fn send(path: &str, msg: &[u8]) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    // A leading '@' names a socket in Linux's abstract namespace.
    if let Some(name) = path.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(msg, &addr)?;
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(std::io::Error::other("abstract sockets need Linux"));
        }
    }
    sock.send_to(msg, path)?;
    Ok(())
}
