//! Micro-benchmarks of the codec's per-request work: parsing and encoding a typical request head
//! (a browser's GET with cookies, as a client sends it and as the proxy sends it on) and a
//! typical answer head (a backend's 200 with a session cookie and a length).
//!
//! `cargo bench -p sessionwatch-h1 --bench codec` (about half a minute). Each figure is the time
//! of one call, in ns; BENCHMARKS.md records them next to the proxy's CPU per request.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use http::StatusCode;
use sessionwatch_h1::{
    AnswerTo, MAX_HEAD, Parsed, encode_answer, encode_request, parse_answer, parse_request,
};

/// What a browser sends for a page of a shop it is logged in to: 11 fields, 620 bytes.
const REQUEST: &[u8] = b"GET /account/orders?page=2 HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Referer: https://shop.example.com/account\r\n\
Connection: keep-alive\r\n\
Cookie: _ga=GA1.2.1204518239.1795478400; theme=dark; lang=en-US; SESSIONID=5f2b8c1e9a4d7f3b6e0c2a8d4f1b7e9c; csrftoken=Jq8rT2mZ0vXw4yB6nK1pL9sD3fG7hC5a\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
\r\n";

/// What a PHP backend answers to it: 9 fields and a length, 390 bytes.
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Tue, 24 Nov 2026 10:00:00 GMT\r\n\
Server: Apache/2.4.62 (Debian)\r\n\
X-Powered-By: PHP/8.2.26\r\n\
Set-Cookie: PHPSESSID=5f2b8c1e9a4d7f3b6e0c2a8d4f1b7e9c; path=/; HttpOnly; SameSite=Lax\r\n\
Expires: Thu, 19 Nov 1981 08:52:00 GMT\r\n\
Cache-Control: no-store, no-cache, must-revalidate\r\n\
Pragma: no-cache\r\n\
Vary: Accept-Encoding\r\n\
Content-Type: text/html; charset=UTF-8\r\n\
Content-Length: 5120\r\n\
\r\n";

fn request_parts() -> http::request::Parts {
    let mut buf = BytesMut::from(REQUEST);
    match parse_request(&mut buf, MAX_HEAD) {
        Parsed::Plain(head) => head.parts,
        other => panic!("the benchmark's request does not parse: {other:?}"),
    }
}

fn request_head(c: &mut Criterion) {
    // A fresh buffer each time, as each request's head is new bytes; its copy is measured
    // apart so that it can be taken off.
    c.bench_function("copy_request_bytes", |b| {
        b.iter(|| black_box(BytesMut::from(black_box(REQUEST))))
    });
    c.bench_function("parse_request/11_fields", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(REQUEST));
            black_box(parse_request(&mut buf, MAX_HEAD))
        })
    });
    let parts = request_parts();
    let mut out = Vec::with_capacity(1024);
    c.bench_function("encode_request/11_fields", |b| {
        b.iter(|| {
            encode_request(black_box(&parts), b"", &mut out);
            black_box(out.len())
        })
    });
}

fn answer_head(c: &mut Criterion) {
    c.bench_function("parse_answer/10_fields", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(ANSWER));
            black_box(parse_answer(&mut buf, false))
        })
    });
    let mut buf = BytesMut::from(ANSWER);
    let headers = match parse_answer(&mut buf, false) {
        Ok(Some(head)) => head.headers,
        other => panic!("the benchmark's answer does not parse: {other:?}"),
    };
    let mut out = Vec::with_capacity(1024);
    c.bench_function("encode_answer/10_fields", |b| {
        b.iter(|| {
            let sent = encode_answer(
                StatusCode::OK,
                black_box(&headers),
                Some(5120),
                AnswerTo::default(),
                false,
                &mut out,
            );
            black_box((sent, out.len()))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = request_head, answer_head
}
criterion_main!(benches);
