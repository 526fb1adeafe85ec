//! The subprotocols the server speaks and how one is chosen, the way
//! kubelet's streaming server negotiates: the client's list, in the
//! client's order of preference, against the server's.

use pier_streamcodec::ws::Codec;

/// SPDY remote command protocols (`X-Stream-Protocol-Version`). v5 is v4
/// over SPDY: its one addition, closing a channel, is WebSocket only.
pub const SPDY_REMOTECOMMAND: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// The SPDY port forward protocol.
pub const SPDY_PORTFORWARD: &[&str] = &["portforward.k8s.io"];

/// WebSocket remote command subprotocols (`Sec-WebSocket-Protocol`).
pub const WS_REMOTECOMMAND: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// WebSocket port forward subprotocols.
pub const WS_PORTFORWARD: &[&str] = &[
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "portforward.k8s.io",
];

/// What a remote command protocol changes in the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavor {
    /// The error channel carries a JSON metav1.Status (v4 and later).
    pub json_status: bool,
    /// The client opens a resize stream for a tty (SPDY v3 and later;
    /// always available on WebSocket).
    pub resize: bool,
    /// Messages are base64 text (WebSocket `base64.` protocols).
    pub base64: bool,
    /// The client may close a channel with a 255 message (WebSocket v5).
    pub close_signal: bool,
}

impl Flavor {
    /// How WebSocket messages carry this protocol's channels.
    pub fn codec(self) -> Codec {
        if self.base64 {
            Codec::Base64
        } else {
            Codec::Binary
        }
    }

    pub fn of(protocol: &str) -> Self {
        let version = protocol
            .strip_prefix('v')
            .and_then(|rest| rest.split('.').next())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(1);
        Self {
            json_status: version >= 4,
            resize: version >= 3,
            base64: protocol.contains("base64."),
            close_signal: version >= 5,
        }
    }
}

/// The first protocol the client offers that the server speaks. Header
/// values may hold several comma-separated protocols.
pub fn negotiate<'a>(
    offered: impl IntoIterator<Item = &'a str>,
    supported: &[&'static str],
) -> Option<&'static str> {
    offered
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| supported.iter().copied().find(|s| *s == p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_preference_wins() {
        let offered = ["v4.channel.k8s.io, v3.channel.k8s.io", "v5.channel.k8s.io"];
        assert_eq!(
            negotiate(offered, SPDY_REMOTECOMMAND),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            negotiate(["nope", "channel.k8s.io"], SPDY_REMOTECOMMAND),
            Some("channel.k8s.io")
        );
        assert_eq!(negotiate(["SPDY/3.1"], SPDY_REMOTECOMMAND), None);
        assert_eq!(negotiate([], SPDY_PORTFORWARD), None);
    }

    #[test]
    fn flavors_follow_the_version() {
        let v5 = Flavor::of("v5.channel.k8s.io");
        assert!(v5.json_status && v5.resize && v5.close_signal && !v5.base64);
        let v4b = Flavor::of("v4.base64.channel.k8s.io");
        assert!(v4b.json_status && v4b.base64 && !v4b.close_signal);
        let v3 = Flavor::of("v3.channel.k8s.io");
        assert!(v3.resize && !v3.json_status);
        let v1 = Flavor::of("channel.k8s.io");
        assert!(!v1.resize && !v1.json_status);
        assert!(Flavor::of("base64.channel.k8s.io").base64);
    }
}
