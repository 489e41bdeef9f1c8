//! A local HTTP server on 127.0.0.1 for tests of code that downloads: each
//! connection gets one request, answered by the test's handler with the
//! bytes of a whole response (which may be malformed or cut short on
//! purpose), and is then closed. It serves a bounded number of connections
//! and stops by itself after that, after a deadline, or when stopped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a server waits for connections before it stops by itself.
const LIFETIME: Duration = Duration::from_secs(120);

/// One request's head.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path, with its query.
    pub path: String,
    /// Header values by lower-case name.
    pub headers: HashMap<String, String>,
}

/// A running server; stopped when dropped.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl Server {
    /// Serves at most `connections` connections, each answered with what
    /// `handler` returns for its request.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub fn start<F>(connections: usize, mut handler: F) -> Server
    where
        F: FnMut(&Request) -> Vec<u8> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the bound address");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + LIFETIME;
            let mut served = 0;
            while served < connections && !flag.load(Ordering::SeqCst) && Instant::now() < deadline
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        served += 1;
                        // A client that hangs up early is its own business.
                        let _ = serve(stream, &mut handler);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
            served
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server, closing its port, and returns how many connections it served.
    pub fn stop(mut self) -> usize {
        self.shut_down()
    }

    /// Waits until the server has served all its connections (or its
    /// deadline passed) and returns how many it served.
    pub fn join(mut self) -> usize {
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("the server thread"))
    }

    fn shut_down(&mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("the server thread"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn serve<F: FnMut(&Request) -> Vec<u8>>(stream: TcpStream, handler: &mut F) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let mut parts = request_line.split_whitespace();
    let request = Request {
        method: parts.next().unwrap_or_default().to_string(),
        path: parts.next().unwrap_or_default().to_string(),
        headers,
    };
    let mut stream = stream;
    stream.write_all(&handler(&request))?;
    stream.flush()
}

/// A whole response: `HTTP/1.1 {status}`, `Content-Length` of `body`,
/// `Connection: close`, then `headers` (`Name: value` each) and `body`.
pub fn response(status: &str, headers: &[String], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    [head.as_bytes(), body].concat()
}
