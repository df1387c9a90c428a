//! The configurable limits of the API contract, with the contract's defaults.

/// Limits on everything a client can make grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest serialized item `data` (and message `data`), in bytes. Default 256 KiB.
    pub max_data_bytes: usize,
    /// Deepest nesting of objects and arrays in `data`; `data` itself is depth 1. Default 32.
    pub max_depth: usize,
    /// Longest message `text`, in Unicode scalar values. Default 4,000.
    pub max_message_chars: usize,
    /// Largest media object, in bytes. Default 100 MiB.
    pub max_media_bytes: u64,
    /// Most devices one user may register. Default 20.
    pub max_devices: usize,
    /// Longest device token, in bytes. Default 512.
    pub max_token_bytes: usize,
    /// Longest search text, in characters. Default 256.
    pub max_query_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_data_bytes: 256 * 1024,
            max_depth: 32,
            max_message_chars: 4_000,
            max_media_bytes: 100 * 1024 * 1024,
            max_devices: 20,
            max_token_bytes: 512,
            max_query_chars: 256,
        }
    }
}
