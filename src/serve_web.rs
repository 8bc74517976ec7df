//! `wgtrain serve-web`: serves the page (web/, built into target/web/site by
//! scripts/web-build.sh) on a local address, with the two things it fetches from the
//! repository: the bundled plays as one text (/corpus.txt) and the model configs
//! (/models/NAME.toml). A plain HTTP/1.1 GET server, one thread per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

/// What every request can see: the site's files and the bundled text.
struct Site {
    dir: PathBuf,
    corpus: Vec<u8>,
}

/// Serves `dir` on `addr` until the process is stopped (port 0: any free one; the line it
/// prints names the address).
pub fn serve(dir: &Path, addr: &str) -> anyhow::Result<()> {
    if !dir.join("index.html").is_file() || !dir.join("pkg").is_dir() {
        bail!(
            "--dir {}: no built page there (index.html and pkg/); build it with `make web` or `bash scripts/web-build.sh`",
            dir.display()
        );
    }
    let corpus = wgtrain::data::bundled_bytes()?;
    let listener = TcpListener::bind(addr).with_context(|| format!("--addr {addr}: cannot listen there"))?;
    let at = listener.local_addr()?;
    println!("serving the page at http://{at}/ (Ctrl-C stops)");
    let site = Arc::new(Site { dir: dir.to_path_buf(), corpus });
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // Out of descriptors, say: wait a little rather than spin.
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        };
        let site = site.clone();
        std::thread::spawn(move || {
            // A client that goes away mid-answer ends only its own connection.
            let _ = answer(&site, stream);
        });
    }
    Ok(())
}

/// Reads one request and writes its answer.
fn answer(site: &Site, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    // At most 64 KiB of request: its line, then headers read and dropped up to a blank line.
    let mut reader = BufReader::new(stream.try_clone()?.take(64 << 10));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    for _ in 0..100 {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split(['?', '#']).next().unwrap_or("");
    let (status, kind, body) = match method {
        "GET" | "HEAD" => match lookup(site, path) {
            Some((kind, body)) => ("200 OK", kind, body),
            None => ("404 Not Found", "text/plain", format!("{path}: not found\n").into_bytes()),
        },
        _ => ("405 Method Not Allowed", "text/plain", b"GET only\n".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(&body)?;
    }
    stream.flush()
}

/// The content type and bytes at `path`: the bundled text, a model config, or a file of the
/// site (never outside it).
fn lookup(site: &Site, path: &str) -> Option<(&'static str, Vec<u8>)> {
    if path == "/corpus.txt" {
        return Some(("text/plain; charset=utf-8", site.corpus.clone()));
    }
    let rel = path.trim_start_matches('/');
    if let Some(name) = rel.strip_prefix("models/") {
        let plain = name.ends_with(".toml") && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !plain || name.starts_with('.') {
            return None;
        }
        let file = wgtrain::train::model_file(&format!("models/{name}"));
        return std::fs::read(file).ok().map(|b| ("text/plain; charset=utf-8", b));
    }
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let rel = Path::new(rel);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let file = site.dir.join(rel);
    let kind = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    std::fs::read(&file).ok().filter(|_| file.is_file()).map(|b| (kind, b))
}
