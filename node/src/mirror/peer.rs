//! Who is asking: the uid of the local process at the other end of a TCP connection.
//!
//! `shoal flatten --out DIR`, `shoal mount` and `shoal umount` make the node (root)
//! write to a path the client names or mount over one. Anyone who can reach the
//! mirror's port could otherwise turn that into root: mount an image of their making
//! over `/etc`, or flatten one into `/root/.ssh`. Layer tars and flat exports hand out
//! content without the private-repository check of the pull API, and GC, rm, pins,
//! pull and fsck change the store. So these endpoints answer only a client on this
//! host running as root. The kernel lists every TCP socket of the
//! network namespace with its owner in `/proc/net/tcp` and `/proc/net/tcp6`; the
//! client's socket is the one whose local address is the peer address the node sees
//! and whose remote port is the node's. A client in another network namespace or on
//! another host is not found there, and is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::node::Node;

/// An error document with `status`.
pub(super) fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let doc = serde_json::json!({"errors": [{"code": code, "message": message}]});
    let mut r = axum::Json(doc).into_response();
    *r.status_mut() = status;
    r
}

/// Middleware: lets a request through only from root on this host.
pub(super) async fn only_local_root(
    axum::extract::State(node): axum::extract::State<std::sync::Arc<Node>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let what = format!("use {}", request.uri().path());
    let refusal = match peer {
        Some(peer) => local_root(&node, peer, &what),
        None => Some(refuse(
            StatusCode::FORBIDDEN,
            "DENIED",
            &format!("only root on the node's host may {what}: the client is unknown"),
        )),
    };
    match refusal {
        Some(r) => r,
        None => next.run(request).await,
    }
}

/// A 403 unless the client is root on this host.
pub(super) fn local_root(node: &Node, peer: SocketAddr, what: &str) -> Option<Response> {
    let why = match peer_uid(peer, node.config.listen.port()) {
        Some(0) => return None,
        Some(uid) => format!("the request came from uid {uid}"),
        None => {
            "the request's socket is not one of this host's (another host or network namespace)"
                .to_owned()
        }
    };
    Some(refuse(
        StatusCode::FORBIDDEN,
        "DENIED",
        &format!("only root on the node's host may {what}: {why}"),
    ))
}

/// The uid owning the local socket at `peer` connected to port `port` (any port if 0).
pub(super) fn peer_uid(peer: SocketAddr, port: u16) -> Option<u32> {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            find_owner(&text, peer, port)
        })
}

/// Finds the owner of the established socket `local` → `…:port` in a `/proc/net/tcp*`
/// table.
fn find_owner(table: &str, local: SocketAddr, port: u16) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(l), Some(r), Some(state), Some(uid)) =
            (fields.get(1), fields.get(2), fields.get(3), fields.get(7))
        else {
            return None;
        };
        // 01 is TCP_ESTABLISHED.
        if *state != "01" {
            return None;
        }
        let l = parse_addr(l)?;
        let r = parse_addr(r)?;
        (l == local && (port == 0 || r.port() == port))
            .then(|| uid.parse().ok())
            .flatten()
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word of the
/// address as the host's memory holds it, the port big-endian.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip.to_canonical(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_name_the_socket_owner() {
        let lo = |n: u32| {
            let ip = u32::from_ne_bytes([127, 0, 0, 1]);
            format!("{ip:08X}:{n:04X}")
        };
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
             1: {} {} 01 00000000:00000000 00:00000000 00000000  1000        0 2 1\n\
             2: {} {} 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n",
            lo(5050),
            lo(40000),
            lo(5050),
            lo(5050),
            lo(40000),
        );
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(find_owner(&table, client, 5050), Some(1000));
        assert_eq!(find_owner(&table, client, 6000), None);
        let server: SocketAddr = "127.0.0.1:5050".parse().unwrap();
        assert_eq!(find_owner(&table, server, 40000), Some(0));
        let mapped = "[::ffff:127.0.0.1]:40000".parse::<SocketAddr>().unwrap();
        let mapped = SocketAddr::new(mapped.ip().to_canonical(), mapped.port());
        assert_eq!(find_owner(&table, mapped, 5050), Some(1000));
    }

    #[test]
    fn ipv6_addresses_parse_word_by_word() {
        let words: Vec<String> = Ipv6Addr::LOCALHOST
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect();
        let text = format!("{}:0050", words.concat());
        assert_eq!(parse_addr(&text), Some("[::1]:80".parse().unwrap()));
        assert_eq!(parse_addr("zz:0050"), None);
    }
}
