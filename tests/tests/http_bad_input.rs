//! Bad input over real HTTP: malformed and truncated JSON, wrong content types, oversize and deeply
//! nested bodies, bad ids, cursors, limits, preconditions and idempotency keys, unicode edge cases,
//! message and media limits.
//!
//! Every refusal must be a `4xx` `application/problem+json` document with the code `API.md` gives,
//! never a `5xx`; valid but unusual input (NUL, RTL marks, emoji, exact limits) must be accepted and
//! come back unchanged; and the server must still be healthy afterwards.
//!
//! Each test collects every mismatch before failing, so one run shows the whole picture.

// Helpers outside `#[test]` functions fail their test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::panic)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use rookery_tests::http::{Answer, EVENTUALLY, TestApp, TestUser, eventually, spawn_app};
use serde_json::{Value, json};

/// Collects mismatches instead of stopping at the first one.
#[derive(Debug, Default)]
struct Report {
    failures: Vec<String>,
    checked: usize,
}

impl Report {
    /// Expects a problem document with `status` and `code`.
    fn problem(&mut self, name: &str, answer: &Answer, status: u16, code: &str) {
        self.checked += 1;
        if let Some(why) = problem_mismatch(answer, &[(status, code)]) {
            self.failures.push(format!("{name}: {why}"));
        }
    }

    /// Expects a problem document with one of `allowed` (status, code) pairs.
    fn problem_of(&mut self, name: &str, answer: &Answer, allowed: &[(u16, &str)]) {
        self.checked += 1;
        if let Some(why) = problem_mismatch(answer, allowed) {
            self.failures.push(format!("{name}: {why}"));
        }
    }

    /// Expects exactly `status` (a success).
    fn status(&mut self, name: &str, answer: &Answer, status: u16) {
        self.checked += 1;
        if answer.status.as_u16() != status {
            self.failures.push(format!(
                "{name}: expected {status}, got {}: {}",
                answer.status,
                excerpt(&answer.text)
            ));
        }
    }

    /// Expects what `expect` says.
    fn expect(&mut self, name: &str, answer: &Answer, expect: Expect) {
        match expect {
            Expect::Status(status) => self.status(name, answer, status),
            Expect::Problem(status, code) => self.problem(name, answer, status, code),
        }
    }

    /// Records a failed condition.
    fn check(&mut self, name: &str, ok: bool, detail: impl FnOnce() -> String) {
        self.checked += 1;
        if !ok {
            self.failures.push(format!("{name}: {}", detail()));
        }
    }

    /// Fails the test with every mismatch.
    #[track_caller]
    fn finish(self, at_least: usize) {
        assert!(
            self.failures.is_empty(),
            "{} of {} checks failed:\n{}",
            self.failures.len(),
            self.checked,
            self.failures.join("\n")
        );
        assert!(self.checked >= at_least, "only {} checks ran", self.checked);
    }
}

/// What one request of a table must answer.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Exactly this (success) status.
    Status(u16),
    /// A problem document with this status and code.
    Problem(u16, &'static str),
}

/// The first 300 characters of a body, for messages.
fn excerpt(text: &str) -> String {
    text.chars().take(300).collect()
}

/// Why `answer` is not a problem document with one of the `allowed` statuses and codes, if it is not.
fn problem_mismatch(answer: &Answer, allowed: &[(u16, &str)]) -> Option<String> {
    let status = answer.status.as_u16();
    if answer.status.is_server_error() {
        return Some(format!("a server error {status}: {}", excerpt(&answer.text)));
    }
    let Some((_, code)) = allowed.iter().find(|(s, _)| *s == status) else {
        return Some(format!(
            "expected one of {allowed:?}, got {status}: {}",
            excerpt(&answer.text)
        ));
    };
    if answer.content_type() != Some("application/problem+json") {
        return Some(format!(
            "content type {:?}, not application/problem+json",
            answer.content_type()
        ));
    }
    if answer.body["code"] != *code || answer.body["status"] != status || answer.body["type"] != "about:blank" {
        return Some(format!("expected code {code}: {}", excerpt(&answer.text)));
    }
    None
}

/// Sends `request` bytes as they are over a fresh connection and reads the whole answer.
///
/// Used where an HTTP client would normalize the request (`..` segments, raw bytes in the path,
/// hand-made chunked bodies, a `Content-Length` the body does not match).
async fn raw(app: &TestApp, request: Vec<u8>) -> Answer {
    let addr = app.base().trim_start_matches("http://").to_owned();
    tokio::task::spawn_blocking(move || raw_blocking(&addr, &request))
        .await
        .expect("the raw request task")
}

fn raw_blocking(addr: &str, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    // Written from another thread while this one reads: the server may answer and close before
    // reading everything (an oversize body), and a failed write is fine as long as an answer arrives.
    let mut writer = stream.try_clone().expect("a second handle on the socket");
    let request = request.to_vec();
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            // A reset after the answer arrived still leaves the answer to parse.
            Err(_) if !bytes.is_empty() => break,
            Err(error) => panic!("reading the answer failed: {error}"),
        }
    }
    // Unblocks the writer if the server stopped reading without closing.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = writing.join();
    parse_response(&bytes)
}

/// Parses an HTTP/1.1 response (fixed length or chunked body) into an [`Answer`].
fn parse_response(bytes: &[u8]) -> Answer {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut body = bytes[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let code: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(name, value);
        }
    }
    let chunked = headers
        .get("transfer-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    } else if let Some(length) = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.truncate(length);
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    Answer {
        status: StatusCode::from_u16(code).expect("a status"),
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        bytes = &bytes[end + 2..];
        if size == 0 || bytes.len() < size {
            break;
        }
        out.extend_from_slice(&bytes[..size]);
        bytes = bytes.get(size + 2..).unwrap_or_default();
    }
    out
}

/// A raw request with a bearer token, `Connection: close` and an optional JSON body.
fn raw_request(user: &TestUser<'_>, method: &str, target: &str, body: Option<&[u8]>) -> Vec<u8> {
    raw_request_as(user, method, target, "application/json", body)
}

/// A raw request with a bearer token, `Connection: close` and an optional body of `content_type`.
fn raw_request_as(user: &TestUser<'_>, method: &str, target: &str, content_type: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
        user.token()
    )
    .into_bytes();
    if let Some(body) = body {
        request.extend_from_slice(
            format!("Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
        );
        request.extend_from_slice(body);
    } else {
        request.extend_from_slice(b"\r\n");
    }
    request
}

/// Sends an authenticated request with `body` as it is, declared as `content_type` (none when `None`).
async fn send_body(
    user: &TestUser<'_>,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Answer {
    let request = user.request(method, path).body(body);
    let request = match content_type {
        Some(content_type) => request.header(CONTENT_TYPE, content_type),
        None => request,
    };
    user.send(request).await
}

/// The JSON type a route takes: merge patch for `PATCH`, plain JSON otherwise.
fn json_type(method: &Method) -> &'static str {
    if *method == Method::PATCH {
        "application/merge-patch+json"
    } else {
        "application/json"
    }
}

/// A header value from text the test knows to be valid.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("a header value")
}

/// `data` nested `levels` objects deep (`data` itself is level 1).
fn nested_objects(levels: usize) -> String {
    let mut data = String::from("1");
    for _ in 0..levels {
        data = format!("{{\"a\":{data}}}");
    }
    data
}

/// The routes that take a JSON body, with a valid body each, aimed at Alice's item `n1`.
fn body_routes() -> Vec<(&'static str, Method, &'static str, Value)> {
    vec![
        ("put item", Method::PUT, "/v1/items/notes/n1", json!({"data": {"x": 1}})),
        (
            "patch item",
            Method::PATCH,
            "/v1/items/notes/n1",
            json!({"data": {"x": 2}}),
        ),
        (
            "restore",
            Method::POST,
            "/v1/items/notes/n1/restore",
            json!({"version": 1}),
        ),
        (
            "send message",
            Method::POST,
            "/v1/messages",
            json!({"to": "bob", "text": "hi"}),
        ),
        (
            "register device",
            Method::PUT,
            "/v1/devices/d1",
            json!({"platform": "fcm", "token": "t1"}),
        ),
        (
            "declare media",
            Method::POST,
            "/v1/media",
            json!({"content_type": "image/png", "size": 1}),
        ),
    ]
}

/// Alice, with her item `n1` at version 1 (the target of the write routes).
async fn alice_with_a_note(app: &TestApp) -> TestUser<'_> {
    let alice = app.user("alice").await;
    alice
        .put("/v1/items/notes/n1", &json!({"data": {"text": "first"}}))
        .await
        .expect_status(201);
    alice
}

/// `GET /healthz` is `200 {"status": "ok"}`, and Alice can still write and read.
async fn still_healthy(app: &TestApp, alice: &TestUser<'_>, report: &mut Report) {
    let health = Answer::read(app.anonymous(Method::GET, "/healthz").send().await.expect("sent")).await;
    report.status("healthz afterwards", &health, 200);
    report.check("healthz body", health.body == json!({"status": "ok"}), || {
        health.text.clone()
    });
    let written = alice
        .put("/v1/items/notes/after", &json!({"data": {"still": "working"}}))
        .await;
    report.status("a write afterwards", &written, 201);
    let read = alice.get("/v1/items/notes/after").await;
    report.status("a read afterwards", &read, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_content_types_sizes_and_depths_are_client_errors() {
    let app = spawn_app().await;
    let alice = alice_with_a_note(&app).await;
    let mut report = Report::default();

    // Malformed and truncated JSON, on every route that takes a body.
    let valid = r#"{"data": {"text": "abc", "tags": ["x", "y"]}}"#;
    let mut malformed: Vec<(String, Vec<u8>)> = vec![
        ("open brace".into(), b"{".to_vec()),
        ("missing value".into(), br#"{"data": }"#.to_vec()),
        ("trailing comma".into(), br#"{"data": {"a": 1,}}"#.to_vec()),
        ("trailing garbage".into(), br#"{"data": {}} x"#.to_vec()),
        ("two documents".into(), br#"{"data": {}}{"data": {}}"#.to_vec()),
        ("bare word".into(), b"nul".to_vec()),
        ("empty body".into(), Vec::new()),
        ("whitespace only".into(), b"  \n ".to_vec()),
        ("single quotes".into(), b"{'data': {}}".to_vec()),
        ("NaN".into(), br#"{"data": {"a": NaN}}"#.to_vec()),
        ("number out of range".into(), br#"{"data": {"a": 1e999}}"#.to_vec()),
        ("invalid UTF-8".into(), b"{\"data\": {\"a\": \"\xff\xfe\"}}".to_vec()),
        ("byte order mark".into(), b"\xef\xbb\xbf{\"data\": {}}".to_vec()),
        (
            "unescaped control character".into(),
            b"{\"data\": {\"a\": \"x\x01y\"}}".to_vec(),
        ),
        ("bad escape".into(), br#"{"data": {"a": "\q"}}"#.to_vec()),
        ("an array".into(), b"[]".to_vec()),
        ("a string".into(), br#""data""#.to_vec()),
        ("null".into(), b"null".to_vec()),
    ];
    for cut in [1, 5, 10, 20, valid.len() - 1] {
        malformed.push((format!("truncated at {cut}"), valid.as_bytes()[..cut].to_vec()));
    }
    for (route, method, path, _) in body_routes() {
        for (name, body) in &malformed {
            let content_type = json_type(&method);
            let answer = send_body(&alice, method.clone(), path, Some(content_type), body.clone()).await;
            report.problem(&format!("{route}, {name}"), &answer, 400, "invalid_request");
        }
    }

    // Anything but JSON is 415, checked before the body is parsed.
    let wrong_types = [
        Some("text/plain"),
        None,
        Some("multipart/form-data; boundary=xyz"),
        Some("application/x-www-form-urlencoded"),
        Some("application/xml"),
        Some("application/json; charset=latin1"),
        Some("application/jsonx"),
        Some("json"),
        Some(""),
    ];
    for (route, method, path, body) in body_routes() {
        for content_type in wrong_types {
            let answer = send_body(&alice, method.clone(), path, content_type, body.to_string()).await;
            report.problem(
                &format!("{route} as {content_type:?}"),
                &answer,
                415,
                "unsupported_media_type",
            );
        }
    }
    // A multipart body proper, as a browser form would send it; merge patch is for PATCH only, and
    // PATCH also takes plain JSON.
    let multipart = "--xyz\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n{}\r\n--xyz--\r\n";
    let unsupported = Expect::Problem(415, "unsupported_media_type");
    for (name, method, content_type, body, expect) in [
        (
            "multipart form",
            Method::PUT,
            "multipart/form-data; boundary=xyz",
            multipart,
            unsupported,
        ),
        (
            "PUT as merge patch",
            Method::PUT,
            "application/merge-patch+json",
            r#"{"data": {}}"#,
            unsupported,
        ),
        (
            "PATCH as application/json",
            Method::PATCH,
            "application/json; charset=utf-8",
            r#"{"data": {"plain": "json"}}"#,
            Expect::Status(200),
        ),
    ] {
        let answer = send_body(&alice, method, "/v1/items/notes/n1", Some(content_type), body).await;
        report.expect(name, &answer, expect);
    }

    // Over the 1 MiB body limit, declared or streamed.
    let over_body = format!("{{\"data\": {{\"blob\": \"{}\"}}}}", "x".repeat(1024 * 1024));
    for (route, method, path, _) in body_routes() {
        let content_type = json_type(&method);
        // Sent raw: an HTTP client may report the server's early answer as a failed write.
        let request = raw_request_as(&alice, method.as_str(), path, content_type, Some(over_body.as_bytes()));
        let answer = raw(&app, request).await;
        report.problem(&format!("{route}, body over 1 MiB"), &answer, 413, "payload_too_large");
    }
    let declared = format!(
        "PUT /v1/items/notes/n1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\nConnection: close\r\n\r\n{{",
        alice.token()
    );
    let answer = raw(&app, declared.into_bytes()).await;
    report.problem("a declared 5 MB body", &answer, 413, "payload_too_large");
    let mut chunked = format!(
        "PUT /v1/items/notes/n1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        alice.token()
    )
    .into_bytes();
    let piece = format!("{{\"data\": {{\"blob\": \"{}", "x".repeat(64 * 1024));
    let filler = "x".repeat(64 * 1024);
    chunked.extend_from_slice(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes());
    for _ in 0..20 {
        chunked.extend_from_slice(format!("{:x}\r\n{filler}\r\n", filler.len()).as_bytes());
    }
    chunked.extend_from_slice(b"4\r\n\"}}}\r\n0\r\n\r\n");
    let answer = raw(&app, chunked).await;
    report.problem("a chunked body over 1 MiB", &answer, 413, "payload_too_large");

    // Item data: exactly 256 KiB serialized is accepted, one byte more is 413.
    // `{"blob":"…"}` serializes to the string's length plus 11 bytes.
    let limit = 256 * 1024;
    let at_limit = json!({"data": {"blob": "x".repeat(limit - 11)}});
    let answer = alice.put("/v1/items/notes/big", &at_limit).await;
    report.status("data of exactly 256 KiB", &answer, 201);
    let over = json!({"data": {"blob": "x".repeat(limit - 10)}});
    let answer = alice.put("/v1/items/notes/big2", &over).await;
    report.problem("data of 256 KiB + 1", &answer, 413, "payload_too_large");
    let answer = alice
        .patch("/v1/items/notes/big", &json!({"data": {"more": "x".repeat(100)}}))
        .await;
    report.problem("a patch taking data over 256 KiB", &answer, 413, "payload_too_large");
    let answer = alice
        .post(
            "/v1/messages",
            &json!({"to": "bob", "text": "hi", "data": {"blob": "x".repeat(300 * 1024)}}),
        )
        .await;
    report.problem("message data over 256 KiB", &answer, 413, "payload_too_large");

    // Depth: 32 levels of data are accepted, 33 are 400; arrays count like objects.
    let too_deep = Expect::Problem(400, "invalid_request");
    for (name, method, path, body, expect) in [
        (
            "data 32 levels deep",
            Method::PUT,
            "/v1/items/notes/deep32",
            format!("{{\"data\": {}}}", nested_objects(32)),
            Expect::Status(201),
        ),
        (
            "data 33 levels deep",
            Method::PUT,
            "/v1/items/notes/deep33",
            format!("{{\"data\": {}}}", nested_objects(33)),
            too_deep,
        ),
        (
            "arrays 33 levels deep",
            Method::PUT,
            "/v1/items/notes/deep33a",
            format!("{{\"data\": {{\"a\": {}1{}}}}}", "[".repeat(32), "]".repeat(32)),
            too_deep,
        ),
        (
            "a patch making data 33 deep",
            Method::PATCH,
            "/v1/items/notes/deep32",
            format!("{{\"data\": {{\"b\": {}}}}}", nested_objects(32)),
            too_deep,
        ),
        (
            "message data 33 deep",
            Method::POST,
            "/v1/messages",
            format!("{{\"to\": \"bob\", \"text\": \"x\", \"data\": {}}}", nested_objects(33)),
            too_deep,
        ),
    ] {
        let content_type = json_type(&method);
        let answer = send_body(&alice, method, path, Some(content_type), body).await;
        report.expect(name, &answer, expect);
    }
    // Hostile depth: far beyond any recursion limit, in every body route.
    let brackets = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let objects = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    for (route, method, path, _) in body_routes() {
        let content_type = json_type(&method);
        for (shape, deep) in [("brackets", &brackets), ("objects", &objects)] {
            for (whole, body) in [("the body", deep.clone()), ("data", format!("{{\"data\": {deep}}}"))] {
                let answer = send_body(&alice, method.clone(), path, Some(content_type), body).await;
                let name = format!("{route}, {whole} 100,000 deep {shape}");
                report.problem(&name, &answer, 400, "invalid_request");
            }
        }
    }

    // Strict bodies: unknown members, wrong types, missing members.
    let put_bodies = [
        ("unknown member", json!({"data": {}, "colour": "red"})),
        ("data missing", json!({"visibility": "public"})),
        ("data null", json!({"data": null})),
        ("data an array", json!({"data": [1]})),
        ("data a string", json!({"data": "text"})),
        ("bad visibility", json!({"data": {}, "visibility": "secret"})),
        ("visibility not a string", json!({"data": {}, "visibility": 1})),
    ];
    for (name, body) in put_bodies {
        let answer = alice.put("/v1/items/notes/strict", &body).await;
        report.problem(&format!("put item, {name}"), &answer, 400, "invalid_request");
    }
    for (name, body) in [
        ("version a string", json!({"version": "1"})),
        ("version negative", json!({"version": -1})),
        ("version fractional", json!({"version": 1.5})),
        ("version missing", json!({})),
    ] {
        let answer = alice.post("/v1/items/notes/n1/restore", &body).await;
        report.problem(&format!("restore, {name}"), &answer, 400, "invalid_request");
    }
    let answer = alice.post("/v1/items/notes/n1/restore", &json!({"version": 99})).await;
    report.problem("restore of a version that never was", &answer, 404, "not_found");
    let answer = alice.post("/v1/items/notes/n1/restore", &json!({"version": 0})).await;
    report.problem_of(
        "restore of version 0",
        &answer,
        &[(400, "invalid_request"), (404, "not_found")],
    );
    let answer = alice
        .patch("/v1/items/notes/n1", &json!({"visibility": "secret"}))
        .await;
    report.problem("patch to a bad visibility", &answer, 400, "invalid_request");
    // Removing `data` with a merge patch leaves no document; the server may refuse that or read it
    // as an empty object, but never fail or store a non-object.
    let answer = alice.patch("/v1/items/notes/n1", &json!({"data": null})).await;
    if answer.status.is_success() {
        report.check(
            "a patch removing data leaves an object",
            answer.body["data"] == json!({}),
            || answer.text.clone(),
        );
    } else {
        report.problem("patch removing data", &answer, 400, "invalid_request");
    }

    // Framework answers are problem documents too.
    let answer = alice
        .send(alice.request(Method::POST, "/v1/items/notes/n1").json(&json!({})))
        .await;
    report.check(
        "wrong method",
        answer.status.as_u16() == 405 && answer.content_type() == Some("application/problem+json"),
        || format!("{} {}", answer.status, answer.text),
    );

    still_healthy(&app, &alice, &mut report).await;
    report.finish(250);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_cursors_and_limits_are_400() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    for id in ["a", "b", "c"] {
        alice
            .put(
                &format!("/v1/items/notes/{id}"),
                &json!({"data": {"word": "cursorword"}}),
            )
            .await
            .expect_status(201);
    }
    alice
        .patch("/v1/items/notes/a", &json!({"data": {"v": 2}}))
        .await
        .expect_status(200);
    for text in ["one", "two"] {
        bob.post("/v1/messages", &json!({"to": "alice", "text": text}))
            .await
            .expect_status(202);
    }
    let mut report = Report::default();

    // Ids in the path, sent raw so nothing normalizes them on the way.
    let bad_collections = [
        "Notes".to_owned(),
        "1notes".to_owned(),
        "_notes".to_owned(),
        "a".repeat(65),
        "..".to_owned(),
        ".".to_owned(),
        "a%2Fb".to_owned(),
        "a%2fb".to_owned(),
        "caf%C3%A9".to_owned(),
        "no%20space".to_owned(),
        "n%00x".to_owned(),
        "n%E2%80%8Fx".to_owned(),
        "%FF".to_owned(),
        "notes.x".to_owned(),
    ];
    let bad_ids = [
        "..".to_owned(),
        ".".to_owned(),
        ".hidden".to_owned(),
        "-x".to_owned(),
        "a".repeat(129),
        "a%2Fb".to_owned(),
        "%2E%2E".to_owned(),
        "%C3%A9".to_owned(),
        "%F0%9F%98%80".to_owned(),
        "a%00b".to_owned(),
        "a%20b".to_owned(),
        "%E2%80%AEx".to_owned(),
        "%FF%FE".to_owned(),
        "a%2B".to_owned(),
        "a%40b".to_owned(),
    ];
    for collection in &bad_collections {
        for (method, suffix, body) in [
            ("GET", "/x", None),
            ("PUT", "/x", Some(&b"{\"data\": {}}"[..])),
            ("GET", "", None),
            ("GET", "/x/history", None),
        ] {
            let target = format!("/v1/items/{collection}{suffix}");
            let answer = raw(&app, raw_request(&alice, method, &target, body)).await;
            report.problem(&format!("{method} {target}"), &answer, 400, "invalid_request");
        }
        let target = format!("/v1/search?q=x&collection={collection}");
        let answer = raw(&app, raw_request(&alice, "GET", &target, None)).await;
        report.problem(
            &format!("search in collection {collection}"),
            &answer,
            400,
            "invalid_request",
        );
    }
    for id in &bad_ids {
        for (method, suffix, body) in [
            ("GET", "", None),
            ("PUT", "", Some(&b"{\"data\": {}}"[..])),
            ("DELETE", "", None),
            ("GET", "/history", None),
            ("POST", "/restore", Some(&b"{\"version\": 1}"[..])),
        ] {
            let target = format!("/v1/items/notes/{id}{suffix}");
            let answer = raw(&app, raw_request(&alice, method, &target, body)).await;
            report.problem(&format!("{method} {target}"), &answer, 400, "invalid_request");
        }
        let target = format!("/v1/users/alice/items/notes/{id}");
        let answer = raw(&app, raw_request(&alice, "GET", &target, None)).await;
        report.problem(&format!("GET {target}"), &answer, 400, "invalid_request");
        // `+` and `@` are allowed in user ids (not in item ids): those two name a user with no item.
        let target = format!("/v1/users/{id}/items/notes/a");
        let answer = raw(&app, raw_request(&alice, "GET", &target, None)).await;
        if matches!(id.as_str(), "a%2B" | "a%40b") {
            report.problem(&format!("owner {id}"), &answer, 404, "not_found");
        } else {
            report.problem(&format!("owner {id}"), &answer, 400, "invalid_request");
        }
        let target = format!("/v1/devices/{id}");
        let body = Some(&b"{\"platform\": \"fcm\", \"token\": \"t\"}"[..]);
        let answer = raw(&app, raw_request(&alice, "PUT", &target, body)).await;
        report.problem(&format!("PUT {target}"), &answer, 400, "invalid_request");
        let answer = raw(&app, raw_request(&alice, "DELETE", &target, None)).await;
        report.problem(&format!("DELETE {target}"), &answer, 400, "invalid_request");
        // A malformed media id cannot name an object: the same 404 as an unknown one.
        let target = format!("/v1/media/{id}");
        let answer = raw(&app, raw_request(&alice, "GET", &target, None)).await;
        report.problem_of(
            &format!("GET {target}"),
            &answer,
            &[(400, "invalid_request"), (404, "not_found")],
        );
    }
    // Empty segments match no route.
    for target in [
        "/v1/items/notes/",
        "/v1/items//x",
        "/v1/items/",
        "/v1/users//items/notes/a",
        "/v1/devices/",
    ] {
        let answer = raw(&app, raw_request(&alice, "GET", target, None)).await;
        report.problem_of(
            &format!("GET {target}"),
            &answer,
            &[(400, "invalid_request"), (404, "not_found"), (405, "invalid_request")],
        );
    }
    // The longest valid ids are fine; a message to a malformed user id is not.
    let longest = format!("/v1/items/{}/{}", "c".repeat(64), "i".repeat(128));
    let answer = alice.put(&longest, &json!({"data": {}})).await;
    report.status("the longest valid ids", &answer, 201);
    let answer = alice.put("/v1/items/notes/A.b:c-d_9", &json!({"data": {}})).await;
    report.status("an id with every allowed character class", &answer, 201);
    for to in ["", "not a user", "-x", "é", "a/b"] {
        let answer = alice.post("/v1/messages", &json!({"to": to, "text": "x"})).await;
        report.problem(&format!("message to {to:?}"), &answer, 400, "invalid_request");
    }

    // Real cursors of each listing, to hand to the others.
    let list_cursor = alice.get("/v1/items/notes?limit=1").await.body["next_cursor"]
        .as_str()
        .expect("a list cursor")
        .to_owned();
    let history_cursor = alice.get("/v1/items/notes/a/history?limit=1").await.body["next_cursor"]
        .as_str()
        .expect("a history cursor")
        .to_owned();
    let sync_cursor = alice.get("/v1/sync?limit=1").await.body["next_cursor"]
        .as_str()
        .expect("a sync cursor")
        .to_owned();
    let search_cursor = eventually(EVENTUALLY, || async {
        let page = alice.get("/v1/search?q=cursorword&limit=1").await;
        page.body["next_cursor"].as_str().map(str::to_owned)
    })
    .await
    .expect("a search cursor once the items are indexed");
    let garbage = [
        ("garbage", "!!!".to_owned()),
        ("not base64 of a cursor", "zzzz".to_owned()),
        ("unknown kind", "eDox".to_owned()),
        ("huge", "A".repeat(10_000)),
        ("percent garbage", "%FF%FE".to_owned()),
        ("empty", String::new()),
    ];
    let listings = [
        ("list", "/v1/items/notes?cursor=", Some(&list_cursor)),
        ("history", "/v1/items/notes/a/history?cursor=", Some(&history_cursor)),
        ("sync", "/v1/sync?since=", Some(&sync_cursor)),
        ("messages", "/v1/messages?since=", None),
        ("search", "/v1/search?q=cursorword&cursor=", Some(&search_cursor)),
    ];
    for (listing, prefix, own) in &listings {
        for (name, cursor) in &garbage {
            let answer = raw(&app, raw_request(&alice, "GET", &format!("{prefix}{cursor}"), None)).await;
            report.problem(
                &format!("{listing} with a {name} cursor"),
                &answer,
                400,
                "invalid_request",
            );
        }
        // Another listing's cursor is refused, never misread (sync and messages share feed positions).
        for (other, _, cursor) in &listings {
            let Some(cursor) = cursor else { continue };
            let shares_positions = matches!((*listing, *other), ("messages", "sync") | ("sync", "messages"));
            if other == listing || shares_positions {
                continue;
            }
            let answer = alice.get(&format!("{prefix}{cursor}")).await;
            report.problem(
                &format!("{listing} with a {other} cursor"),
                &answer,
                400,
                "invalid_request",
            );
        }
        // Its own cursor works.
        if let Some(cursor) = own {
            let answer = alice.get(&format!("{prefix}{cursor}")).await;
            report.status(&format!("{listing} with its own cursor"), &answer, 200);
        }
    }

    // Limits: 1..=100 only, as plain decimal integers.
    let limit_routes = [
        "/v1/items/notes?",
        "/v1/items/notes/a/history?",
        "/v1/sync?",
        "/v1/messages?",
        "/v1/search?q=cursorword&",
    ];
    for route in limit_routes {
        for limit in [
            "0",
            "101",
            "-1",
            "abc",
            "1e3",
            "1.5",
            "",
            "+5",
            "0x10",
            "99999999999999999999999",
            "%FF",
        ] {
            let answer = raw(&app, raw_request(&alice, "GET", &format!("{route}limit={limit}"), None)).await;
            report.problem(&format!("{route}limit={limit}"), &answer, 400, "invalid_request");
        }
        let answer = alice.get(&format!("{route}limit=1&limit=2")).await;
        report.problem(&format!("{route} limit twice"), &answer, 400, "invalid_request");
        for limit in ["1", "100"] {
            let answer = alice.get(&format!("{route}limit={limit}")).await;
            report.status(&format!("{route}limit={limit}"), &answer, 200);
        }
    }
    for version in ["0", "-1", "abc", "1.0", "", "99999999999999999999999"] {
        let answer = raw(
            &app,
            raw_request(&alice, "GET", &format!("/v1/items/notes/a?version={version}"), None),
        )
        .await;
        report.problem_of(
            &format!("get version {version:?}"),
            &answer,
            &[(400, "invalid_request"), (404, "not_found")],
        );
    }
    for scope in ["everyone", "MINE", ""] {
        let answer = alice.get(&format!("/v1/search?q=x&scope={scope}")).await;
        report.problem(&format!("search scope {scope:?}"), &answer, 400, "invalid_request");
    }
    let answer = alice.get("/v1/search").await;
    report.problem("search without q", &answer, 400, "invalid_request");

    still_healthy(&app, &alice, &mut report).await;
    report.finish(360);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_preconditions_keys_messages_and_media_at_their_limits() {
    let app = spawn_app().await;
    let alice = alice_with_a_note(&app).await;
    let mut report = Report::default();

    // Lone surrogates cannot be text: refused. A proper escaped pair is an ordinary character.
    for (name, body) in [
        ("lone high surrogate", r#"{"data": {"s": "\ud800"}}"#),
        ("lone low surrogate", r#"{"data": {"s": "\udc00"}}"#),
        ("high surrogate then a letter", r#"{"data": {"s": "\ud800\u0041"}}"#),
        ("reversed pair", r#"{"data": {"s": "\ude00\ud83d"}}"#),
        ("lone surrogate in a key", r#"{"data": {"\ud800": 1}}"#),
    ] {
        let answer = send_body(&alice, Method::PUT, "/v1/items/notes/u", Some("application/json"), body).await;
        report.problem(name, &answer, 400, "invalid_request");
    }
    let answer = send_body(
        &alice,
        Method::PUT,
        "/v1/items/notes/pair",
        Some("application/json"),
        r#"{"data": {"s": "\ud83d\ude00"}}"#,
    )
    .await;
    report.status("an escaped surrogate pair", &answer, 201);
    report.check(
        "the pair reads back as one emoji",
        answer.body["data"]["s"] == "😀",
        || answer.text.clone(),
    );

    // Unusual but valid text round-trips exactly.
    let odd = json!({
        "nul": "a\u{0}b",
        "rtl": "\u{200f}שלום\u{202e}abc\u{202c}",
        "emoji": "🦆 family: 👨‍👩‍👧‍👦, flag: 🇳🇴",
        "combining": "e\u{301}",
        "bom": "\u{feff}x",
        "a\u{0}key": "nul in a key",
        "🔑": ["\u{10ffff}", "\u{fffd}"],
    });
    let answer = alice.put("/v1/items/notes/odd", &json!({"data": odd})).await;
    report.status("unusual unicode in data", &answer, 201);
    let read = alice.get("/v1/items/notes/odd").await;
    report.check("unusual unicode reads back unchanged", read.body["data"] == odd, || {
        read.text.clone()
    });
    let answer = alice
        .post(
            "/v1/messages",
            &json!({"to": "bob", "text": "🦆\u{0}\u{200f}x", "data": {"e": "😀"}}),
        )
        .await;
    report.status("unusual unicode in a message", &answer, 202);

    // Search text: 1 to 256 characters (not bytes), emoji and syntax are plain text.
    alice
        .put("/v1/items/notes/duck", &json!({"data": {"text": "rubber 🦆 duck"}}))
        .await
        .expect_status(201);
    eventually(EVENTUALLY, || async {
        (alice.get("/v1/search?q=rubber").await.body["found"] == 1).then_some(())
    })
    .await
    .expect("the duck is indexed");
    for (name, q, status) in [
        ("256 ASCII characters", "a".repeat(256), 200),
        ("257 ASCII characters", "a".repeat(257), 400),
        ("256 two-byte characters", "é".repeat(256), 200),
        ("257 two-byte characters", "é".repeat(257), 400),
        ("256 emoji", "🦆".repeat(256), 200),
        ("257 emoji", "🦆".repeat(257), 400),
        ("one emoji", "🦆".to_owned(), 200),
        ("emoji and a word", "🦆 rubber".to_owned(), 200),
        ("RTL marks", "\u{200f}rubber\u{202e}".to_owned(), 200),
        ("NUL", "rub\u{0}ber".to_owned(), 200),
        ("query syntax", "(and title:'x') \"rubber\" * ~ -".to_owned(), 200),
        ("empty", String::new(), 400),
    ] {
        let answer = alice
            .send(alice.request(Method::GET, "/v1/search").query(&[("q", q.as_str())]))
            .await;
        if status == 200 {
            report.status(&format!("search, {name}"), &answer, 200);
        } else {
            report.problem(&format!("search, {name}"), &answer, 400, "invalid_request");
        }
    }
    let found = alice
        .send(alice.request(Method::GET, "/v1/search").query(&[("q", "🦆 rubber")]))
        .await;
    report.check(
        "an emoji next to a word still finds it",
        found.body["found"] == 1,
        || found.text.clone(),
    );
    // Percent-escapes that do not decode to UTF-8 are refused, never read as U+FFFD, in any parameter.
    for target in [
        "/v1/search?q=%FF%FE",
        "/v1/search?q=caf%C3",
        "/v1/search?q=rubber&collection=%80",
        "/v1/search?%FF=rubber",
        "/v1/items/notes?cursor=%FF",
        "/v1/sync?since=%C0%AF",
    ] {
        let answer = raw(&app, raw_request(&alice, "GET", target, None)).await;
        report.problem(&format!("{target}: not UTF-8"), &answer, 400, "invalid_request");
    }
    let answer = raw(&app, raw_request(&alice, "GET", "/v1/search?q=caf%C3%A9+rubber", None)).await;
    report.status("search text escaped as UTF-8, with + for a space", &answer, 200);

    // Preconditions: only one strong quoted version, or `If-None-Match: *`.
    let bad_if_match = [
        "1",
        "\"abc\"",
        "W/\"1\"",
        "\"\"",
        "\"1\", \"2\"",
        "*",
        "\"-1\"",
        "\"1",
        "1\"",
        "\"1.0\"",
        "\" 1\"",
        "\"99999999999999999999999\"",
    ];
    let writes: [(&str, Method, &str, Option<Value>); 4] = [
        (
            "put",
            Method::PUT,
            "/v1/items/notes/n1",
            Some(json!({"data": {"x": 1}})),
        ),
        (
            "patch",
            Method::PATCH,
            "/v1/items/notes/n1",
            Some(json!({"data": {"x": 1}})),
        ),
        ("delete", Method::DELETE, "/v1/items/notes/n1", None),
        (
            "restore",
            Method::POST,
            "/v1/items/notes/n1/restore",
            Some(json!({"version": 1})),
        ),
    ];
    // Both preconditions at once, and the bad values of each.
    let mut bad_headers: Vec<(String, Vec<(&str, HeaderValue)>)> = vec![(
        "both preconditions".into(),
        vec![
            ("if-match", HeaderValue::from_static("\"1\"")),
            ("if-none-match", HeaderValue::from_static("*")),
        ],
    )];
    for value in bad_if_match {
        bad_headers.push((format!("If-Match {value}"), vec![("if-match", header_value(value))]));
    }
    for value in ["\"1\"", "W/\"1\"", "1", ""] {
        bad_headers.push((
            format!("If-None-Match {value:?}"),
            vec![("if-none-match", header_value(value))],
        ));
    }
    // Idempotency keys: 1 to 128 visible ASCII characters, sent once.
    bad_headers.extend(
        [
            ("a key empty", header_value("")),
            ("a key of 129 characters", header_value(&"k".repeat(129))),
            (
                "a non-ASCII key",
                HeaderValue::from_bytes("clé-é".as_bytes()).expect("a header value"),
            ),
            ("a key with a space inside", header_value("a b")),
            ("a key with a tab inside", header_value("a\tb")),
        ]
        .map(|(name, key)| (name.to_owned(), vec![("idempotency-key", key)])),
    );
    bad_headers.push((
        "two keys".into(),
        vec![
            ("idempotency-key", header_value("k1")),
            ("idempotency-key", header_value("k2")),
        ],
    ));
    for (name, method, path, body) in &writes {
        for (refused, headers) in &bad_headers {
            let mut request = alice.request(method.clone(), path);
            for (header, value) in headers {
                request = request.header(*header, value.clone());
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = alice.send(request).await;
            report.problem(&format!("{name} with {refused}"), &answer, 400, "invalid_request");
        }
    }
    // None of those writes changed the item; a correct precondition still works.
    let current = alice.get("/v1/items/notes/n1").await;
    report.check(
        "bad preconditions and keys changed nothing",
        current.body["version"] == 1,
        || current.text.clone(),
    );
    let answer = alice
        .send(
            alice
                .request(Method::PUT, "/v1/items/notes/n1")
                .header("if-match", "\"1\"")
                .json(&json!({"data": {"x": 1}})),
        )
        .await;
    report.status("a correct If-Match", &answer, 200);

    for (name, path, body) in [
        ("send message", "/v1/messages", json!({"to": "bob", "text": "x"})),
        (
            "declare media",
            "/v1/media",
            json!({"content_type": "image/png", "size": 1}),
        ),
    ] {
        let answer = alice
            .send(
                alice
                    .request(Method::POST, path)
                    .header("idempotency-key", "k".repeat(129))
                    .json(&body),
            )
            .await;
        report.problem(
            &format!("{name} with a 129-character key"),
            &answer,
            400,
            "invalid_request",
        );
    }
    let answer = alice
        .send(
            alice
                .request(Method::PUT, "/v1/items/notes/keyed")
                .header("idempotency-key", "~".repeat(128))
                .json(&json!({"data": {}})),
        )
        .await;
    report.status("a 128-character key", &answer, 201);

    // Message text: at most 4,000 characters (not bytes).
    for (name, text, status) in [
        ("4,000 ASCII characters", "x".repeat(4000), 202),
        ("4,001 ASCII characters", "x".repeat(4001), 400),
        ("4,000 emoji", "🦆".repeat(4000), 202),
        ("4,001 emoji", "🦆".repeat(4001), 400),
    ] {
        let answer = alice.post("/v1/messages", &json!({"to": "bob", "text": text})).await;
        if status == 202 {
            report.status(&format!("message of {name}"), &answer, 202);
        } else {
            report.problem(&format!("message of {name}"), &answer, 400, "invalid_request");
        }
    }
    for (name, body) in [
        ("text missing", json!({"to": "bob"})),
        ("to missing", json!({"text": "x"})),
        ("text not a string", json!({"to": "bob", "text": 5})),
        ("data not an object", json!({"to": "bob", "text": "x", "data": [1]})),
    ] {
        let answer = alice.post("/v1/messages", &body).await;
        report.problem(&format!("message, {name}"), &answer, 400, "invalid_request");
    }

    // Media: 1 byte to 100 MiB, of the allowed types only.
    let max_media: u64 = 100 * 1024 * 1024;
    for (name, body, expected) in [
        (
            "size 0",
            json!({"content_type": "image/png", "size": 0}),
            (400, "invalid_request"),
        ),
        (
            "size 100 MiB + 1",
            json!({"content_type": "video/mp4", "size": max_media + 1}),
            (413, "payload_too_large"),
        ),
        (
            "size u64::MAX",
            json!({"content_type": "video/mp4", "size": u64::MAX}),
            (413, "payload_too_large"),
        ),
        (
            "size -1",
            json!({"content_type": "image/png", "size": -1}),
            (400, "invalid_request"),
        ),
        (
            "size 1.5",
            json!({"content_type": "image/png", "size": 1.5}),
            (400, "invalid_request"),
        ),
        (
            "size a string",
            json!({"content_type": "image/png", "size": "10"}),
            (400, "invalid_request"),
        ),
        (
            "size missing",
            json!({"content_type": "image/png"}),
            (400, "invalid_request"),
        ),
        (
            "type text/html",
            json!({"content_type": "text/html", "size": 10}),
            (400, "invalid_request"),
        ),
        (
            "type empty",
            json!({"content_type": "", "size": 10}),
            (400, "invalid_request"),
        ),
        (
            "type application/octet-stream",
            json!({"content_type": "application/octet-stream", "size": 10}),
            (400, "invalid_request"),
        ),
        (
            "type with a newline",
            json!({"content_type": "image/png\r\nX-Evil: 1", "size": 10}),
            (400, "invalid_request"),
        ),
    ] {
        let answer = alice.post("/v1/media", &body).await;
        report.problem(&format!("media {name}"), &answer, expected.0, expected.1);
    }
    for (name, body) in [
        ("size 1", json!({"content_type": "image/png", "size": 1})),
        ("size 100 MiB", json!({"content_type": "video/mp4", "size": max_media})),
        ("a PDF", json!({"content_type": "application/pdf", "size": 10})),
        ("audio", json!({"content_type": "audio/mpeg", "size": 10})),
    ] {
        let answer = alice.post("/v1/media", &body).await;
        report.status(&format!("media {name}"), &answer, 201);
    }

    still_healthy(&app, &alice, &mut report).await;
    report.finish(140);
    app.shutdown().await;
}
