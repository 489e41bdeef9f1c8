//! A fake Hugging Face hub on 127.0.0.1: just enough of the protocol for
//! hf-hub's blocking client, which asks `GET {endpoint}/{repo}/resolve/{revision}/{file}`
//! first with `Range: bytes=0-0` (reading `etag`, `x-repo-commit` and the size
//! from `content-range`), then with `Range: bytes=START-` for the content.
//! It serves a bounded number of requests, one per connection, and stops by
//! itself after that, after a deadline, or when stopped.

use std::collections::HashMap;

use resnet_test_support::http::{response, Request, Server};

/// The commit every served file belongs to.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

const MAX_REQUESTS: usize = 32;

/// A running fake hub; stopped when dropped.
pub struct FakeHub {
    server: Server,
}

impl FakeHub {
    /// Serves `files`, keyed by (`OWNER/REPO`, file path), at revision `main` or [`COMMIT`].
    pub fn start(files: HashMap<(String, String), Vec<u8>>) -> FakeHub {
        let server = Server::start(MAX_REQUESTS, move |request| answer(request, &files));
        FakeHub { server }
    }

    /// The base URL to pass as the endpoint.
    pub fn endpoint(&self) -> String {
        self.server.url()
    }

    /// Stops the server, closing its port, and returns how many requests it served.
    pub fn stop(self) -> usize {
        self.server.stop()
    }
}

fn answer(request: &Request, files: &HashMap<(String, String), Vec<u8>>) -> Vec<u8> {
    match find(&request.path, files) {
        Some(content) => respond_file(content, request.headers.get("range").map(String::as_str)),
        None => response(
            "404 Not Found",
            &["x-error-code: EntryNotFound".into()],
            b"Entry not found",
        ),
    }
}

/// The file `/{owner}/{repo}/resolve/{revision}/{file}` names, if served.
fn find<'a>(path: &str, files: &'a HashMap<(String, String), Vec<u8>>) -> Option<&'a [u8]> {
    let mut parts = path.trim_start_matches('/').splitn(5, '/');
    let (owner, repo, resolve, revision, file) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if resolve != "resolve" || !(revision == "main" || revision == COMMIT) {
        return None;
    }
    files
        .get(&(format!("{owner}/{repo}"), file.to_string()))
        .map(Vec::as_slice)
}

fn respond_file(content: &[u8], range: Option<&str>) -> Vec<u8> {
    let etag = format!("\"{:016x}{:08x}\"", fnv1a(content), content.len());
    let mut headers = vec![
        format!("ETag: {etag}"),
        format!("x-repo-commit: {COMMIT}"),
        "Accept-Ranges: bytes".to_string(),
    ];
    let Some((start, end)) = range.and_then(|r| parse_range(r, content.len())) else {
        return response("200 OK", &headers, content);
    };
    headers.push(format!(
        "Content-Range: bytes {start}-{end}/{}",
        content.len()
    ));
    response("206 Partial Content", &headers, &content[start..=end])
}

/// `bytes=START-[END]` as an inclusive range within `len` bytes.
fn parse_range(range: &str, len: usize) -> Option<(usize, usize)> {
    let (start, end) = range.strip_prefix("bytes=")?.split_once('-')?;
    let start: usize = start.parse().ok()?;
    let end = match end {
        "" => len.checked_sub(1)?,
        end => end.parse::<usize>().ok()?.min(len.checked_sub(1)?),
    };
    (start <= end).then_some((start, end))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
