//! Checks a sink's URL before data moves: a scheme NNG and ZeroMQ both speak, and for TCP a
//! host that resolves and a port.

use std::net::ToSocketAddrs;

/// `Ok` when `url` is `ipc://PATH`, `inproc://NAME` or `tcp://HOST:PORT` with a host that
/// resolves (`*` or an empty host only when `listen`); otherwise what is wrong with it.
pub fn check_url(url: &str, listen: bool) -> Result<(), String> {
    if let Some(rest) = url
        .strip_prefix("ipc://")
        .or_else(|| url.strip_prefix("inproc://"))
    {
        return match rest.is_empty() {
            true => Err(format!("{url:?}: no path after the scheme")),
            false => Ok(()),
        };
    }
    let Some(addr) = url.strip_prefix("tcp://") else {
        return Err(format!("{url:?}: expected tcp://, ipc:// or inproc://"));
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{url:?}: expected tcp://HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{url:?}: port {port:?} is not a number from 0 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host == "*" {
        return match listen {
            true => Ok(()),
            false => Err(format!(
                "{url:?}: a dialing sink needs a host to connect to"
            )),
        };
    }
    match (host, port).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!("{url:?}: host {host:?} has no address")),
        Err(e) => Err(format!("{url:?}: host {host:?} does not resolve: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn urls_are_checked_before_use() {
        for ok in [
            "tcp://127.0.0.1:5000",
            "tcp://localhost:1",
            "tcp://[::1]:5000",
            "ipc:///tmp/x.ipc",
            "inproc://a",
        ] {
            assert_eq!(check_url(ok, false), Ok(()), "{ok}");
        }
        assert_eq!(check_url("tcp://*:5000", true), Ok(()));
        for (bad, why) in [
            ("tcp://999.1.1.1:1", "does not resolve"),
            ("tcp://127.0.0.1:99999", "port"),
            ("tcp://127.0.0.1", "HOST:PORT"),
            ("tcp://*:5000", "needs a host"),
            ("udp://x:1", "expected tcp://"),
            ("ipc://", "no path"),
        ] {
            let e = check_url(bad, false).unwrap_err();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }
}
