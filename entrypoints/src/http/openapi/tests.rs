//! Checks that the document lists every operation and answer, and that each schema built from a rule
//! agrees with the code that applies the rule, both ways.

use proptest::prelude::*;
use proptest::string::string_regex;
use regex_lite::Regex;
use rookery_domain::{CollectionName, DeviceId, ItemId, Limits, MediaId, MediaObject, Seq, Timestamp, UserId, Version};
use rookery_ports::cursor;
use serde_json::Value;
use utoipa::PartialSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use super::*;
use crate::http::extract;

fn doc() -> Value {
    serde_json::from_str(document()).expect("valid JSON")
}

/// The `pattern` of a schema component.
fn pattern_of<T: PartialSchema>() -> String {
    let RefOr::T(Schema::Object(object)) = T::schema() else {
        panic!("an object schema");
    };
    object.pattern.expect("a pattern")
}

fn regex_of<T: PartialSchema>() -> Regex {
    Regex::new(&pattern_of::<T>()).expect("a valid pattern")
}

/// Strings the pattern of `T` matches (proptest generates from patterns without anchors, and every
/// pattern here is anchored at both ends).
fn matching<T: PartialSchema>() -> impl Strategy<Value = String> {
    let pattern = pattern_of::<T>();
    let inner = pattern
        .strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .expect("an anchored pattern");
    string_regex(inner).expect("proptest reads the pattern")
}

#[test]
fn the_document_is_openapi_3_1_and_lists_every_route() {
    let doc = doc();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/v1/items/{collection}/{id}",
        "/v1/items/{collection}",
        "/v1/items/{collection}/{id}/history",
        "/v1/items/{collection}/{id}/restore",
        "/v1/users/{owner}/items/{collection}/{id}",
        "/v1/sync",
        "/v1/search",
        "/v1/messages",
        "/v1/devices",
        "/v1/devices/{device_id}",
        "/v1/media",
        "/v1/media/{id}",
        "/healthz",
        "/openapi.json",
        "/v1/me/export",
        "/v1/me",
    ] {
        assert!(paths.contains_key(path), "missing {path}");
    }
    let item = &paths["/v1/items/{collection}/{id}"];
    for method in ["put", "patch", "get", "delete"] {
        assert!(item.get(method).is_some(), "missing {method}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(
        paths["/healthz"]["get"]["responses"].get("401").is_none(),
        "healthz needs no token"
    );
}

#[test]
fn every_operation_lists_each_answer_it_can_give() {
    let doc = doc();
    let statuses = |path: &str, method: &str| -> Vec<String> {
        let responses = doc["paths"][path][method]["responses"].as_object().expect("responses");
        responses.keys().cloned().collect()
    };
    let edge = ["401", "410", "413", "429", "500", "503"];
    let cases: [(&str, &str, &[&str]); 17] = [
        (
            "/v1/items/{collection}/{id}",
            "put",
            &["200", "201", "400", "409", "415", "422"],
        ),
        (
            "/v1/items/{collection}/{id}",
            "patch",
            &["200", "400", "404", "409", "415", "422"],
        ),
        ("/v1/items/{collection}/{id}", "get", &["200", "304", "400", "404"]),
        (
            "/v1/items/{collection}/{id}",
            "delete",
            &["204", "400", "404", "409", "422"],
        ),
        ("/v1/items/{collection}", "get", &["200", "400"]),
        ("/v1/items/{collection}/{id}/history", "get", &["200", "400", "404"]),
        (
            "/v1/items/{collection}/{id}/restore",
            "post",
            &["200", "400", "404", "409", "415", "422"],
        ),
        (
            "/v1/users/{owner}/items/{collection}/{id}",
            "get",
            &["200", "400", "404"],
        ),
        ("/v1/sync", "get", &["200", "400"]),
        ("/v1/search", "get", &["200", "400"]),
        ("/v1/messages", "post", &["202", "400", "415", "422"]),
        ("/v1/messages", "get", &["200", "400"]),
        ("/v1/devices/{device_id}", "put", &["200", "400", "415", "422"]),
        ("/v1/devices/{device_id}", "delete", &["204", "400", "404", "422"]),
        ("/v1/devices", "get", &["200"]),
        ("/v1/media", "post", &["201", "400", "415", "422"]),
        ("/v1/media/{id}", "get", &["200", "400", "404"]),
    ];
    for (path, method, own) in cases {
        let mut expected: Vec<String> = own.iter().chain(edge.iter()).map(|s| (*s).to_owned()).collect();
        expected.sort();
        assert_eq!(statuses(path, method), expected, "{method} {path}");
    }
    assert_eq!(statuses("/healthz", "get"), ["200"]);
    let unauthorized = &doc["components"]["responses"]["Unauthorized"];
    assert!(unauthorized["headers"]["WWW-Authenticate"]["required"].as_bool() == Some(true));
    assert!(doc["components"]["responses"]["RateLimited"]["headers"]["Retry-After"].is_object());
    let conflict = &doc["components"]["responses"]["VersionConflict"]["content"]["application/problem+json"];
    assert_eq!(
        conflict["schema"]["allOf"][1]["required"],
        serde_json::json!(["current_version", "events"])
    );
}

#[test]
fn bodies_refuse_the_members_the_server_refuses() {
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    for name in [
        "PutItemBody",
        "RestoreBody",
        "SendMessageBody",
        "DeviceBody",
        "MediaBody",
        "DevTokenBody",
    ] {
        assert_eq!(schemas[name]["additionalProperties"], Value::Bool(false), "{name}");
    }
    let patch = &doc["paths"]["/v1/items/{collection}/{id}"]["patch"]["requestBody"]["content"];
    assert!(patch.get("application/json").is_some() && patch.get("application/merge-patch+json").is_some());
}

proptest! {
    #[test]
    fn id_patterns_match_exactly_the_ids_the_domain_accepts(raw in "[A-Za-z0-9_.:@+ /é-]{0,3}|[a-z]{60,70}|[A-Z]{125,130}") {
        prop_assert_eq!(regex_of::<schemas::CollectionName>().is_match(&raw), CollectionName::parse(raw.as_str()).is_ok());
        prop_assert_eq!(regex_of::<schemas::ItemId>().is_match(&raw), ItemId::parse(raw.as_str()).is_ok());
        prop_assert_eq!(regex_of::<schemas::UserId>().is_match(&raw), UserId::parse(raw.as_str()).is_ok());
        prop_assert_eq!(regex_of::<schemas::DeviceId>().is_match(&raw), DeviceId::parse(raw.as_str()).is_ok());
        prop_assert_eq!(regex_of::<schemas::MediaId>().is_match(&raw), MediaId::parse(raw.as_str()).is_ok());
    }

    #[test]
    fn feed_and_history_cursors_match_what_the_server_writes(seq in any::<u64>()) {
        // Positions up to 19 digits; the pattern leaves out the few 20-digit ones the server reads too.
        prop_assume!(seq.to_string().len() <= 19);
        prop_assert!(regex_of::<schemas::FeedCursor>().is_match(&cursor::seq_cursor(Seq(seq))));
        prop_assert!(regex_of::<schemas::HistoryCursor>().is_match(&cursor::version_cursor(Version(seq))));
    }

    #[test]
    fn every_cursor_the_patterns_allow_is_read(
        feed in matching::<schemas::FeedCursor>(),
        history in matching::<schemas::HistoryCursor>(),
        list in matching::<schemas::ItemListCursor>(),
    ) {
        prop_assert!(cursor::parse_seq(Some(&feed)).is_ok(), "{}", feed);
        prop_assert!(cursor::parse_version(Some(&history)).is_ok(), "{}", history);
        prop_assert!(cursor::parse_id(Some(&list)).is_ok(), "{}", list);
        prop_assert!(cursor::parse_seq(Some(&history)).is_err(), "{}", history);
    }

    #[test]
    fn item_list_cursors_match_what_the_server_writes(id in "[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}") {
        let id = ItemId::parse(id).expect("a valid id");
        prop_assert!(regex_of::<schemas::ItemListCursor>().is_match(&cursor::id_cursor(&id)));
    }

    #[test]
    fn media_types_match_exactly_the_ones_the_domain_accepts(
        raw in "[ \t]?((image|Video|AUDIO|application|text|pdf)/[a-zA-Z0-9.+;= -]{0,8}|(?i:application/pdf))[ \n]?",
    ) {
        let declared = MediaObject::declare(
            MediaId::parse("m1").expect("an id"),
            UserId::parse("alice").expect("an id"),
            &raw,
            1,
            Timestamp::from_millis(0),
            &Limits::default(),
        );
        prop_assert_eq!(regex_of::<schemas::MediaContentType>().is_match(&raw), declared.is_ok(), "{}", raw);
    }

    #[test]
    fn header_values_the_patterns_allow_are_accepted(
        key in matching::<schemas::IdempotencyKey>(),
        tag in matching::<schemas::EntityTag>(),
        token in matching::<schemas::DeviceToken>(),
    ) {
        prop_assert!(extract::valid_key(&key));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::IF_MATCH, tag.parse().expect("a header value"));
        prop_assert!(extract::precondition(&headers).is_ok(), "{}", tag);
        prop_assert!(rookery_domain::device::check_token(&token, &Limits::default()).is_ok());
    }
}
