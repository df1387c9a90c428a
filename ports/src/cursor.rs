//! Opaque pagination cursors and page sizes.
//!
//! A cursor is base64url text over `<kind>:<position>`, so clients cannot mistake it for something to build,
//! and a cursor of one listing handed to another is refused rather than misread.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rookery_domain::{ItemId, Seq, Version};

use crate::AppError;

/// The page size when the client names none.
pub const DEFAULT_LIMIT: usize = 50;
/// The largest page size a client may ask for.
pub const MAX_LIMIT: usize = 100;
/// The longest cursor read; anything longer is refused before it is decoded.
pub const MAX_CURSOR_LEN: usize = 512;
/// The kind of a feed cursor ([`seq_cursor`]): `s:<seq>`, before base64url.
pub const SEQ_KIND: char = 's';
/// The kind of a history cursor ([`version_cursor`]): `v:<version>`, before base64url.
pub const VERSION_KIND: char = 'v';
/// The kind of an item-list cursor ([`id_cursor`]): `i:<item id>`, before base64url.
pub const ID_KIND: char = 'i';

/// Checks a client's page size: absent means [`DEFAULT_LIMIT`]; 1 to [`MAX_LIMIT`] otherwise.
///
/// # Errors
/// [`AppError::Invalid`] for 0 or more than [`MAX_LIMIT`].
pub fn page_size(limit: Option<u64>) -> Result<usize, AppError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => Ok(n as usize),
        Some(_) => Err(AppError::Invalid(format!("limit must be between 1 and {MAX_LIMIT}"))),
    }
}

fn encode(kind: char, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{position}"))
}

fn decode(kind: char, cursor: &str) -> Result<String, AppError> {
    let bad = || AppError::Invalid("invalid cursor".into());
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (k, position) = text.split_once(':').ok_or_else(bad)?;
    if k.len() != kind.len_utf8() || !k.starts_with(kind) {
        return Err(bad());
    }
    Ok(position.to_owned())
}

/// A cursor after feed position `seq`.
pub fn seq_cursor(seq: Seq) -> String {
    encode(SEQ_KIND, &seq.0.to_string())
}

/// Reads a feed cursor; `None` is the beginning.
///
/// # Errors
/// [`AppError::Invalid`] for anything [`seq_cursor`] did not make.
pub fn parse_seq(cursor: Option<&str>) -> Result<Seq, AppError> {
    let Some(cursor) = cursor else {
        return Ok(Seq(0));
    };
    decode(SEQ_KIND, cursor)?
        .parse()
        .map(Seq)
        .map_err(|_| AppError::Invalid("invalid cursor".into()))
}

/// A cursor after item version `version`.
pub fn version_cursor(version: Version) -> String {
    encode(VERSION_KIND, &version.0.to_string())
}

/// Reads a history cursor; `None` is the beginning.
///
/// # Errors
/// [`AppError::Invalid`] for anything [`version_cursor`] did not make.
pub fn parse_version(cursor: Option<&str>) -> Result<Version, AppError> {
    let Some(cursor) = cursor else {
        return Ok(Version(0));
    };
    decode(VERSION_KIND, cursor)?
        .parse()
        .map(Version)
        .map_err(|_| AppError::Invalid("invalid cursor".into()))
}

/// A cursor after item id `id`.
pub fn id_cursor(id: &ItemId) -> String {
    encode(ID_KIND, id.as_str())
}

/// Reads an item-list cursor; `None` is the beginning.
///
/// # Errors
/// [`AppError::Invalid`] for anything [`id_cursor`] did not make.
pub fn parse_id(cursor: Option<&str>) -> Result<Option<ItemId>, AppError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    ItemId::parse(decode(ID_KIND, cursor)?)
        .map(Some)
        .map_err(|_| AppError::Invalid("invalid cursor".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_each_other() {
        assert_eq!(parse_seq(Some(&seq_cursor(Seq(17)))), Ok(Seq(17)));
        assert_eq!(parse_version(Some(&version_cursor(Version(3)))), Ok(Version(3)));
        assert!(parse_version(Some(&seq_cursor(Seq(17)))).is_err());
        assert!(parse_seq(Some("not a cursor!")).is_err());
        assert!(parse_seq(Some("")).is_err());
        assert_eq!(parse_seq(None), Ok(Seq(0)));
    }

    #[test]
    fn page_sizes_follow_the_contract() {
        assert_eq!(page_size(None), Ok(50));
        assert_eq!(page_size(Some(100)), Ok(100));
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(101)).is_err());
    }
}
