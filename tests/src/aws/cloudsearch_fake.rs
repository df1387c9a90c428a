//! A small fake CloudSearch domain that speaks the wire protocol of `shared/reference/aws-facts.md`.
//!
//! No CloudSearch emulator exists, so the tests run the adapter against this: a document endpoint
//! (`POST /2013-01-01/documents/batch`) that validates ids, field names and values as CloudSearch does,
//! and a search endpoint (`GET /2013-01-01/search`) that parses the structured queries the adapter emits
//! (`and`, `or`, `not`, `term`, `prefix`, `matchall`, single-quoted strings with `\` escapes) and evaluates them over
//! the stored documents. Because the query is really parsed, an escaping bug shows up as a syntax error or
//! as a wrong match, which is what the injection tests look for.
//! Text fields match whole lowercase words, like CloudSearch's analyzers; other fields match exactly.
//! A `prefix` term is not analysed (CloudSearch does not analyse prefixes): on a text field it matches a
//! word of the field that starts with it as given, on other fields a value that starts with it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rookery_domain::projection::words;
use serde_json::{Map, Value, json};

use crate::fixtures::BoxError;

/// The fields the fake analyses as text (word by word); every other field matches whole values.
const TEXT_FIELDS: &[&str] = &["text"];

type Documents = Arc<Mutex<BTreeMap<String, Map<String, Value>>>>;

/// A running fake domain; it stops when dropped.
#[derive(Debug)]
pub struct FakeCloudSearch {
    /// The base URL of both its endpoints.
    pub endpoint: String,
    documents: Documents,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCloudSearch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeCloudSearch {
    /// Starts a fake on a free loopback port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn spawn() -> Result<Self, BoxError> {
        let documents: Documents = Arc::default();
        let app = Router::new()
            .route("/2013-01-01/documents/batch", post(upload))
            .route("/2013-01-01/search", get(search))
            .with_state(documents.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            endpoint,
            documents,
            task,
        })
    }

    /// The stored document with id `id`, if any (its fields as uploaded).
    pub fn document(&self, id: &str) -> Option<Map<String, Value>> {
        self.documents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// How many documents the domain holds (tombstones included).
    pub fn len(&self) -> usize {
        self.documents.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// True when the domain holds no document.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn error(kind: &'static str, message: impl Into<String>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("x-amzn-errortype", HeaderValue::from_static(kind));
    (
        StatusCode::BAD_REQUEST,
        headers,
        axum::Json(json!({"message": message.into()})),
    )
        .into_response()
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/' | b'#' | b':'))
}

fn valid_field_name(name: &str) -> bool {
    (3..=64).contains(&name.len())
        && name != "score"
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn no_nulls(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Array(items) => items.iter().all(|v| !v.is_null() && !v.is_array() && !v.is_object()),
        Value::Object(_) => false,
        _ => true,
    }
}

async fn upload(
    State(documents): State<Documents>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if params.get("format").is_some_and(|f| f != "sdk") {
        return error("DocumentServiceException", "format must be sdk");
    }
    if body.len() > 5 * 1024 * 1024 {
        return error("DocumentServiceException", "batch over 5 MB");
    }
    let Ok(Value::Array(ops)) = serde_json::from_slice::<Value>(&body) else {
        return error("DocumentServiceException", "the batch is not a JSON array");
    };
    // Validate the whole batch first: CloudSearch refuses a bad batch without applying any of it.
    for op in &ops {
        let id = op["id"].as_str().unwrap_or_default();
        if !valid_id(id) {
            return error("DocumentServiceException", format!("invalid document id {id:?}"));
        }
        if op.to_string().len() > 1024 * 1024 {
            return error("DocumentServiceException", format!("document {id} is over 1 MB"));
        }
        match op["type"].as_str() {
            Some("add") => {
                let Some(fields) = op["fields"].as_object() else {
                    return error("DocumentServiceException", format!("document {id} has no fields"));
                };
                for (name, value) in fields {
                    if !valid_field_name(name) || !no_nulls(value) {
                        return error("DocumentServiceException", format!("invalid field {name:?} in {id}"));
                    }
                }
            }
            Some("delete") => {}
            other => return error("DocumentServiceException", format!("unknown operation {other:?}")),
        }
    }
    let (mut adds, mut deletes) = (0, 0);
    let mut stored = documents.lock().unwrap_or_else(PoisonError::into_inner);
    for op in ops {
        let id = op["id"].as_str().unwrap_or_default().to_owned();
        if op["type"] == "add" {
            stored.insert(id, op["fields"].as_object().cloned().unwrap_or_default());
            adds += 1;
        } else {
            stored.remove(&id);
            deletes += 1;
        }
    }
    axum::Json(json!({"status": "success", "adds": adds, "deletes": deletes})).into_response()
}

/// A parsed structured query (the subset the adapter emits).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Every sub-expression matches.
    And(Vec<Expr>),
    /// Any sub-expression matches.
    Or(Vec<Expr>),
    /// The sub-expression does not match.
    Not(Box<Expr>),
    /// The field holds the value (a word of it, for text fields).
    Term {
        /// The field.
        field: String,
        /// The value, unescaped.
        value: String,
    },
    /// The field holds a word (text fields) or a value (other fields) starting with the value.
    Prefix {
        /// The field.
        field: String,
        /// The prefix, unescaped and not analysed.
        value: String,
    },
    /// Every document.
    MatchAll,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Word(String),
    Quoted(String),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '\'' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some(escaped @ ('\\' | '\'')) => value.push(escaped),
                            other => return Err(format!("bad escape \\{other:?} in a string")),
                        },
                        Some('\'') => break,
                        Some(other) => value.push(other),
                        None => return Err("unterminated string".into()),
                    }
                }
                tokens.push(Token::Quoted(value));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '(' || c == ')' || c == '\'' || c.is_whitespace() {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

/// Parses a structured query.
///
/// # Errors
/// A message for anything outside the supported subset, as CloudSearch would refuse bad syntax.
pub fn parse(text: &str) -> Result<Expr, String> {
    let tokens = tokenize(text)?;
    let mut position = 0;
    let expr = parse_expr(&tokens, &mut position)?;
    if position != tokens.len() {
        return Err(format!("unexpected trailing input at token {position}"));
    }
    Ok(expr)
}

fn parse_expr(tokens: &[Token], position: &mut usize) -> Result<Expr, String> {
    match tokens.get(*position) {
        Some(Token::Word(word)) if word == "matchall" => {
            *position += 1;
            Ok(Expr::MatchAll)
        }
        Some(Token::Open) => {
            *position += 1;
            let Some(Token::Word(op)) = tokens.get(*position) else {
                return Err("expected an operator after (".into());
            };
            *position += 1;
            let expr = match op.as_str() {
                "and" | "or" | "not" => {
                    let mut args = Vec::new();
                    while tokens.get(*position).is_some_and(|t| *t != Token::Close) {
                        args.push(parse_expr(tokens, position)?);
                    }
                    match op.as_str() {
                        "and" => Expr::And(args),
                        "or" => Expr::Or(args),
                        _ if args.len() == 1 => Expr::Not(Box::new(args.remove(0))),
                        _ => return Err("not takes one expression".into()),
                    }
                }
                "term" | "prefix" => {
                    let field = match tokens.get(*position) {
                        Some(Token::Word(option)) => option
                            .strip_prefix("field=")
                            .ok_or_else(|| format!("unknown term option {option}"))?
                            .to_owned(),
                        _ => return Err("term needs field=".into()),
                    };
                    *position += 1;
                    let value = match tokens.get(*position) {
                        Some(Token::Quoted(value)) => value.clone(),
                        Some(Token::Word(number)) if number.bytes().all(|b| b.is_ascii_digit()) => number.clone(),
                        other => return Err(format!("term needs a value, found {other:?}")),
                    };
                    *position += 1;
                    if op == "term" {
                        Expr::Term { field, value }
                    } else {
                        Expr::Prefix { field, value }
                    }
                }
                other => return Err(format!("unsupported operator {other}")),
            };
            match tokens.get(*position) {
                Some(Token::Close) => {
                    *position += 1;
                    Ok(expr)
                }
                other => Err(format!("expected ), found {other:?}")),
            }
        }
        other => Err(format!("expected an expression, found {other:?}")),
    }
}

fn values(fields: &Map<String, Value>, field: &str) -> Vec<String> {
    match fields.get(field) {
        Some(Value::Array(items)) => items.iter().map(value_text).collect(),
        Some(value) => vec![value_text(value)],
        None => Vec::new(),
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// How well a document matches `expr`: `None` for no match, else its score (text words matched).
fn evaluate(expr: &Expr, id: &str, fields: &Map<String, Value>) -> Option<f64> {
    match expr {
        Expr::MatchAll => Some(0.0),
        Expr::And(args) => args
            .iter()
            .try_fold(0.0, |sum, arg| evaluate(arg, id, fields).map(|s| sum + s)),
        Expr::Or(args) => {
            let scores: Vec<f64> = args.iter().filter_map(|arg| evaluate(arg, id, fields)).collect();
            (!scores.is_empty()).then(|| scores.iter().sum())
        }
        Expr::Not(arg) => evaluate(arg, id, fields).is_none().then_some(0.0),
        Expr::Term { field, value } if field == "_id" => (id == value).then_some(0.0),
        Expr::Term { field, value } if TEXT_FIELDS.contains(&field.as_str()) => {
            let wanted: Vec<String> = words(value).collect();
            if wanted.is_empty() {
                return None;
            }
            // A value of several words must find every one of them (CloudSearch treats it as a phrase).
            let present: Vec<String> = values(fields, field)
                .iter()
                .flat_map(|text| words(text).collect::<Vec<_>>())
                .collect();
            if !wanted.iter().all(|w| present.contains(w)) {
                return None;
            }
            Some(present.iter().filter(|word| wanted.contains(word)).count() as f64)
        }
        Expr::Term { field, value } => values(fields, field).iter().any(|v| v == value).then_some(0.0),
        Expr::Prefix { value, .. } if value.is_empty() => None,
        Expr::Prefix { field, value } if TEXT_FIELDS.contains(&field.as_str()) => {
            let starting = values(fields, field)
                .iter()
                .flat_map(|text| words(text).collect::<Vec<_>>())
                .filter(|word| word.starts_with(value.as_str()))
                .count();
            (starting > 0).then_some(starting as f64)
        }
        Expr::Prefix { field, value } => values(fields, field)
            .iter()
            .any(|v| v.starts_with(value.as_str()))
            .then_some(0.0),
    }
}

async fn search(State(documents): State<Documents>, Query(params): Query<HashMap<String, String>>) -> Response {
    if params.get("format").is_some_and(|f| f != "sdk") {
        return error("SearchException", "format must be sdk");
    }
    if params.get("q.parser").map(String::as_str) != Some("structured") {
        return error("SearchException", "this fake only speaks q.parser=structured");
    }
    let query = match parse(params.get("q").map_or("", String::as_str)) {
        Ok(query) => query,
        Err(why) => return error("SearchException", format!("Syntax error in query: {why}")),
    };
    let filter = match params.get("fq") {
        Some(fq) => match parse(fq) {
            Ok(filter) => Some(filter),
            Err(why) => return error("SearchException", format!("Syntax error in fq: {why}")),
        },
        None => None,
    };
    let size: usize = params.get("size").and_then(|s| s.parse().ok()).unwrap_or(10);
    let start = match params.get("cursor").map(String::as_str) {
        None => params.get("start").and_then(|s| s.parse().ok()).unwrap_or(0),
        Some("initial") => 0,
        Some(cursor) => match cursor
            .strip_prefix("fake-cursor-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(offset) => offset,
            None => return error("SearchException", "Invalid cursor value"),
        },
    };
    let returned: Vec<String> = params
        .get("return")
        .map(|r| r.split(',').map(str::to_owned).collect())
        .unwrap_or_default();

    let stored = documents.lock().unwrap_or_else(PoisonError::into_inner);
    let mut matches: Vec<(f64, &String, &Map<String, Value>)> = stored
        .iter()
        .filter(|(id, fields)| filter.as_ref().is_none_or(|f| evaluate(f, id, fields).is_some()))
        .filter_map(|(id, fields)| evaluate(&query, id, fields).map(|score| (score, id, fields)))
        .collect();
    // Best first; ties by id, so paging is stable.
    matches.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let found = matches.len();
    let hits: Vec<Value> = matches
        .iter()
        .skip(start)
        .take(size)
        .map(|(score, id, fields)| {
            let mut out = Map::new();
            for name in &returned {
                if name == "_score" {
                    out.insert("_score".into(), json!([score.to_string()]));
                } else if fields.contains_key(name) {
                    out.insert(name.clone(), json!(values(fields, name)));
                }
            }
            json!({"id": id, "fields": out})
        })
        .collect();
    let mut body = json!({
        "status": {"rid": "fake", "timems": 1},
        "hits": {"found": found, "start": start, "hit": hits},
    });
    if params.contains_key("cursor") {
        body["hits"]["cursor"] = json!(format!("fake-cursor-{}", start + size));
    }
    axum::Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_subset_with_escapes() {
        let expr = parse(
            r"(and (term field=text 'it\'s') (or (term field=owner 'a\\b') matchall) (not (term field=version 3)) (prefix field=text 'pa'))",
        )
        .unwrap();
        assert_eq!(
            expr,
            Expr::And(vec![
                Expr::Term {
                    field: "text".into(),
                    value: "it's".into()
                },
                Expr::Or(vec![
                    Expr::Term {
                        field: "owner".into(),
                        value: r"a\b".into()
                    },
                    Expr::MatchAll
                ]),
                Expr::Not(Box::new(Expr::Term {
                    field: "version".into(),
                    value: "3".into()
                })),
                Expr::Prefix {
                    field: "text".into(),
                    value: "pa".into()
                },
            ])
        );
        assert!(parse("(and (term field=text 'open)").is_err());
        assert!(parse("(term field=text 'a') extra").is_err());
        assert!(parse("(near field=text 'a')").is_err());
        assert!(parse("(prefix 'a')").is_err(), "prefix needs field=");
        assert!(parse("(prefix field=text 'a' 'b')").is_err());
    }
}
