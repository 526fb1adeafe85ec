//! The daemon ↔ monitor wire contract. Messages are length-delimited prost
//! messages (`prost::Message::encode_length_delimited`).

#![deny(unsafe_code)]

/// Generated from `monitor.proto`.
pub mod monitor {
    include!(concat!(env!("OUT_DIR"), "/pier.monitor.v1.rs"));
}
