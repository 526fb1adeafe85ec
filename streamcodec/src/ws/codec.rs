//! Kubernetes channel framing on WebSocket messages: the first byte of a
//! binary message is its channel; `base64.` protocols send text whose first
//! character is the channel as an ASCII digit and the rest base64.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio_tungstenite::tungstenite::Message;

/// v5's channel-close message: `[255, channel]`.
pub const CLOSE_CHANNEL: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Binary,
    Base64,
}

impl Codec {
    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        match self {
            Codec::Binary => {
                let mut m = Vec::with_capacity(data.len() + 1);
                m.push(channel);
                m.extend_from_slice(data);
                Message::Binary(m.into())
            }
            Codec::Base64 => {
                let mut text = String::with_capacity(data.len() * 4 / 3 + 5);
                text.push(char::from(b'0' + channel));
                STANDARD.encode_string(data, &mut text);
                Message::Text(text.into())
            }
        }
    }

    /// Channel and payload of a data message; `None` for control messages
    /// and for payloads that do not decode (ignored, as kubelet does).
    pub fn decode(self, message: &Message) -> Option<(u8, Vec<u8>)> {
        let raw: &[u8] = match message {
            Message::Binary(b) => b,
            Message::Text(t) => t.as_bytes(),
            _ => return None,
        };
        let (&first, rest) = raw.split_first()?;
        match self {
            Codec::Binary => Some((first, rest.to_vec())),
            Codec::Base64 if first == CLOSE_CHANNEL => Some((first, rest.to_vec())),
            Codec::Base64 => {
                let channel = first.checked_sub(b'0')?;
                STANDARD.decode(rest).ok().map(|d| (channel, d))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn binary_and_base64_framing() {
        let m = Codec::Binary.encode(1, b"hi");
        assert_eq!(m, Message::Binary(Bytes::from_static(b"\x01hi")));
        assert_eq!(Codec::Binary.decode(&m), Some((1, b"hi".to_vec())));
        // The example from the protocol's documentation: "\n" on stdout.
        let m = Codec::Base64.encode(1, b"\n");
        assert_eq!(m, Message::Text("1Cg==".into()));
        assert_eq!(
            Codec::Base64.decode(&Message::Text("0Zm9vCg==".into())),
            Some((0, b"foo\n".to_vec()))
        );
        assert_eq!(Codec::Base64.decode(&Message::Text("0***".into())), None);
        assert_eq!(Codec::Binary.decode(&Message::Binary(Bytes::new())), None);
        assert_eq!(
            Codec::Binary.decode(&Message::Binary(Bytes::from_static(&[255, 0]))),
            Some((CLOSE_CHANNEL, vec![0]))
        );
    }

    #[test]
    fn every_channel_and_payload_round_trips_in_both_codecs() {
        let payloads: [&[u8]; 4] = [b"", b"x", b"\x00\xff\n", &[0xab; 1000]];
        for codec in [Codec::Binary, Codec::Base64] {
            for channel in 0..=9 {
                for data in payloads {
                    let message = codec.encode(channel, data);
                    assert_eq!(
                        codec.decode(&message),
                        Some((channel, data.to_vec())),
                        "{codec:?} channel {channel}"
                    );
                }
            }
        }
    }

    #[test]
    fn control_messages_carry_no_channel() {
        for codec in [Codec::Binary, Codec::Base64] {
            assert_eq!(codec.decode(&Message::Ping(Bytes::from_static(b"1"))), None);
            assert_eq!(codec.decode(&Message::Close(None)), None);
        }
        // v5's close message is binary even on a base64 protocol.
        let close = Message::Binary(Bytes::from_static(&[CLOSE_CHANNEL, 0]));
        assert_eq!(Codec::Base64.decode(&close), Some((CLOSE_CHANNEL, vec![0])));
    }
}
