//! Endpoint fields checked before they reach a template or a HAProxy runtime command: an
//! endpoint comes from the registry, which anyone who reaches a node's REST port may write, and
//! HAProxy's runtime API runs every `;`-separated command of a line. An endpoint whose `http` is
//! not a plain `HOST:PORT`, or whose group, node or version carries characters a configuration
//! file or command could be steered with, is left out (and logged).

use std::net::IpAddr;

/// The host and port of `HOST:PORT` when HOST is an IP address (IPv6 in brackets) or a DNS name
/// and PORT a non-zero port; `None` for anything else.
pub fn host_port(http: &str) -> Option<(String, u16)> {
    let (host, port) = http.rsplit_once(':')?;
    if !port_digits(port) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv4()) || is_dns_name(host),
    };
    valid.then(|| (host.to_string(), port))
}

/// Whether `value` is safe to put into a configuration or command as a name: non-empty, at most
/// 255 bytes of `A-Z a-z 0-9 . _ - +`.
pub fn is_plain_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 255
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
}

fn port_digits(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.chars().all(|c| c.is_ascii_digit())
}

/// A DNS name: dot-separated labels of letters, digits and inner hyphens, at most 253 bytes.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses_pass() {
        assert_eq!(
            host_port("127.0.0.1:8080"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(
            host_port("web-1.example.org:80"),
            Some(("web-1.example.org".into(), 80))
        );
        assert_eq!(host_port("[::1]:443"), Some(("[::1]".into(), 443)));
        assert_eq!(host_port("localhost:1"), Some(("localhost".into(), 1)));
    }

    #[test]
    fn anything_that_could_steer_a_command_or_file_is_refused() {
        for bad in [
            "127.0.0.1:80; shutdown sessions server be/s1",
            "127.0.0.1;disable frontend fe:80",
            "1.2.3.4:80\nset server be/x state maint",
            "a b:80",
            "host:0",
            "host:65536",
            "host:+80",
            "host:",
            ":80",
            "host",
            "-bad.example:80",
            "{{ evil }}:80",
            "ex$ample:80",
            "[::1;x]:80",
            "::1:80",
        ] {
            assert_eq!(host_port(bad), None, "{bad:?} passed");
        }
        assert!(host_port(&format!("{}:80", "a".repeat(64))).is_none());
    }

    #[test]
    fn names_are_plain() {
        assert!(is_plain_name("task.http.frontpage.v4-2-1"));
        assert!(is_plain_name("4.2.1+build.7"));
        for bad in ["", "a b", "x;y", "a\nb", "{{x}}", "a/b", "é"] {
            assert!(!is_plain_name(bad), "{bad:?} passed");
        }
    }
}
