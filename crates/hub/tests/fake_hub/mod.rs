//! A fake Hugging Face hub on 127.0.0.1: just enough of the protocol for
//! hf-hub's blocking client, which asks `GET {endpoint}/{repo}/resolve/{revision}/{file}`
//! first with `Range: bytes=0-0` (reading `etag`, `x-repo-commit` and the size
//! from `content-range`), then with `Range: bytes=START-` for the content.
//! It serves a bounded number of requests, one per connection, and stops by
//! itself after that, after a deadline, or when stopped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The commit every served file belongs to.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

const MAX_REQUESTS: usize = 32;
const LIFETIME: Duration = Duration::from_secs(120);

/// A running fake hub; stopped when dropped.
pub struct FakeHub {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl FakeHub {
    /// Serves `files`, keyed by (`OWNER/REPO`, file path), at revision `main` or [`COMMIT`].
    pub fn start(files: HashMap<(String, String), Vec<u8>>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + LIFETIME;
            let mut served = 0;
            while served < MAX_REQUESTS && !flag.load(Ordering::SeqCst) && Instant::now() < deadline
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        served += 1;
                        // A client that hangs up early is its own business.
                        let _ = serve(stream, &files);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
            served
        });
        FakeHub {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// The base URL to pass as the endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server, closing its port, and returns how many requests it served.
    pub fn stop(mut self) -> usize {
        self.shut_down()
    }

    fn shut_down(&mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().map_or(0, |t| t.join().unwrap())
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn serve(stream: TcpStream, files: &HashMap<(String, String), Vec<u8>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or_default();
    match find(path, files) {
        Some(content) => respond_file(stream, content, range.as_deref()),
        None => respond(
            stream,
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

fn respond_file(stream: TcpStream, content: &[u8], range: Option<&str>) -> std::io::Result<()> {
    let etag = format!("\"{:016x}{:08x}\"", fnv1a(content), content.len());
    let mut headers = vec![
        format!("ETag: {etag}"),
        format!("x-repo-commit: {COMMIT}"),
        "Accept-Ranges: bytes".to_string(),
    ];
    let Some((start, end)) = range.and_then(|r| parse_range(r, content.len())) else {
        return respond(stream, "200 OK", &headers, content);
    };
    headers.push(format!(
        "Content-Range: bytes {start}-{end}/{}",
        content.len()
    ));
    respond(
        stream,
        "206 Partial Content",
        &headers,
        &content[start..=end],
    )
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

fn respond(
    mut stream: TcpStream,
    status: &str,
    headers: &[String],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
