//! JSON Web Key Set parsing: the RS256 signing keys of a set, by `kid`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::DecodingKey;
use serde_json::Value;

/// Base64url as RFC 7517 writes it (no padding), tolerating padding some publishers add anyway.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Moduli shorter than this (in bytes) are ignored: RSA keys under 2048 bits are not trusted.
const MIN_MODULUS_BYTES: usize = 256;

/// Why a document was refused as a key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    /// The document is not an object with a `keys` array.
    #[error("not a JSON Web Key Set (no \"keys\" array)")]
    NotAKeySet,
    /// The set holds no RSA signing key with a `kid` usable for RS256.
    #[error("the key set holds no usable RS256 key")]
    NoUsableKey,
}

/// The usable keys of one set, by `kid`.
#[derive(Default)]
pub(crate) struct KeyMap {
    keys: HashMap<String, DecodingKey>,
}

impl fmt::Debug for KeyMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("KeyMap").field("kids", &kids).finish()
    }
}

impl KeyMap {
    /// Keeps every key of `document` that can verify RS256 signatures: `kty` `RSA`, a non-empty
    /// `kid`, `use` absent or `sig`, `alg` absent or `RS256`, and a modulus of at least 2048 bits.
    /// Other keys are skipped, not fatal, because a set may legitimately hold keys for other uses.
    ///
    /// # Errors
    /// [`KeySetError`] when the document is not a key set or no key in it is usable.
    pub(crate) fn parse(document: &Value) -> Result<Self, KeySetError> {
        let Some(entries) = document.get("keys").and_then(Value::as_array) else {
            return Err(KeySetError::NotAKeySet);
        };
        let mut keys = HashMap::new();
        for entry in entries {
            match usable_key(entry) {
                Ok((kid, key)) => match keys.entry(kid) {
                    Entry::Vacant(slot) => {
                        slot.insert(key);
                    }
                    Entry::Occupied(slot) => {
                        // Two keys under one `kid` make the choice ambiguous; the first one wins.
                        tracing::warn!(kid = %slot.key(), "duplicate kid in the key set; keeping the first key");
                    }
                },
                Err(reason) => tracing::debug!(%reason, "skipping a key of the key set"),
            }
        }
        if keys.is_empty() {
            return Err(KeySetError::NoUsableKey);
        }
        Ok(Self { keys })
    }

    /// The key named `kid`.
    pub(crate) fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    /// How many keys the set holds.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

fn usable_key(entry: &Value) -> Result<(String, DecodingKey), &'static str> {
    let field = |name: &str| entry.get(name).and_then(Value::as_str);
    if field("kty") != Some("RSA") {
        return Err("not an RSA key");
    }
    let kid = match field("kid") {
        Some(kid) if !kid.is_empty() => kid.to_owned(),
        _ => return Err("no kid"),
    };
    if !matches!(entry.get("use"), None | Some(Value::Null)) && field("use") != Some("sig") {
        return Err("not a signing key");
    }
    if !matches!(entry.get("alg"), None | Some(Value::Null)) && field("alg") != Some("RS256") {
        return Err("not an RS256 key");
    }
    let (Some(n), Some(e)) = (field("n"), field("e")) else {
        return Err("no modulus or exponent");
    };
    let n = BASE64URL.decode(n).map_err(|_| "modulus is not base64url")?;
    let e = BASE64URL.decode(e).map_err(|_| "exponent is not base64url")?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    if n.len() < MIN_MODULUS_BYTES {
        return Err("modulus shorter than 2048 bits");
    }
    if e.is_empty() {
        return Err("zero exponent");
    }
    Ok((kid, DecodingKey::from_rsa_raw_components(n, e)))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn modulus(bytes: usize) -> String {
        BASE64URL.encode(vec![0xC5; bytes])
    }

    #[test]
    fn keeps_rs256_signing_keys_and_skips_the_rest() -> Result<(), KeySetError> {
        let set = json!({"keys": [
            {"kty": "RSA", "kid": "a", "use": "sig", "alg": "RS256", "n": modulus(256), "e": "AQAB"},
            {"kty": "RSA", "kid": "b", "n": modulus(256), "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": modulus(256), "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": modulus(256), "e": "AQAB"},
            {"kty": "RSA", "kid": "short", "n": modulus(128), "e": "AQAB"},
            {"kty": "RSA", "n": modulus(256), "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            "not an object",
        ]});
        let keys = KeyMap::parse(&set)?;
        assert_eq!(keys.len(), 2);
        assert!(keys.get("a").is_some());
        assert!(keys.get("b").is_some());
        for skipped in ["enc", "ps", "short", "ec", "hmac"] {
            assert!(keys.get(skipped).is_none(), "{skipped} should have been skipped");
        }
        Ok(())
    }

    #[test]
    fn refuses_documents_without_a_usable_key() {
        assert_eq!(KeyMap::parse(&json!({"nope": []})).err(), Some(KeySetError::NotAKeySet));
        assert_eq!(KeyMap::parse(&json!([1, 2])).err(), Some(KeySetError::NotAKeySet));
        assert_eq!(
            KeyMap::parse(&json!({"keys": []})).err(),
            Some(KeySetError::NoUsableKey)
        );
        let only_hmac = json!({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]});
        assert_eq!(KeyMap::parse(&only_hmac).err(), Some(KeySetError::NoUsableKey));
    }

    #[test]
    fn accepts_padded_base64url_components() -> Result<(), KeySetError> {
        let padded = base64::engine::general_purpose::URL_SAFE.encode([0u8, 1, 0, 1]);
        let set = json!({"keys": [{"kty": "RSA", "kid": "p", "n": modulus(256), "e": padded}]});
        assert!(KeyMap::parse(&set)?.get("p").is_some());
        Ok(())
    }
}
