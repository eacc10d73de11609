//! A minimal HTTP/1.1 load generator for `scripts/bench-responder.sh`: the same
//! GET over and over from N concurrent connections on one thread, either with a
//! new TCP connection per request (`close`) or with keep-alive.
//!
//! ```text
//! cargo run --release -p chop-responder --example loadgen -- \
//!     HOST:PORT PATH [--connections 32] [--duration 10] [--mode close|keepalive]
//! ```
//!
//! Why not only wrk: wrk opens (and at once closes) a probe connection before
//! its run, and OpenSSL 3.0's `openssl ocsp -port` responder then spins on that
//! connection's EOF forever and answers nothing. This tool sends nothing but the
//! requests, so all three servers are measured with the same client.
//!
//! Prints one line: `requests=… seconds=… rps=… connections=… errors=… non200=…`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
struct Stats {
    requests: Cell<u64>,
    connections: Cell<u64>,
    errors: Cell<u64>,
    non200: Cell<u64>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().expect("HOST:PORT");
    let path = args.next().expect("PATH");
    let (mut conns, mut secs, mut keepalive) = (32usize, 10f64, false);
    while let Some(f) = args.next() {
        let v = args.next().expect("flag value");
        match f.as_str() {
            "--connections" => conns = v.parse().unwrap(),
            "--duration" => secs = v.parse().unwrap(),
            "--mode" => keepalive = v == "keepalive",
            other => panic!("unknown flag {other}"),
        }
    }
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{}\r\n",
        if keepalive {
            ""
        } else {
            "Connection: close\r\n"
        }
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stats = Rc::new(Stats::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let local = tokio::task::LocalSet::new();
    for _ in 0..conns {
        let (addr, request, stats) = (addr.clone(), request.clone(), stats.clone());
        local.spawn_local(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while Instant::now() < deadline {
                let r = if keepalive {
                    keepalive_loop(&addr, request.as_bytes(), &mut buf, &stats, deadline).await
                } else {
                    one_close(&addr, request.as_bytes(), &mut buf, &stats).await
                };
                if r.is_err() {
                    stats.errors.set(stats.errors.get() + 1);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
    }
    rt.block_on(local);
    let elapsed = start.elapsed().as_secs_f64();
    let n = stats.requests.get();
    println!(
        "requests={n} seconds={elapsed:.2} rps={:.0} connections={} errors={} non200={}",
        n as f64 / elapsed,
        stats.connections.get(),
        stats.errors.get(),
        stats.non200.get()
    );
}

fn count(stats: &Stats, response: &[u8]) {
    stats.requests.set(stats.requests.get() + 1);
    if !(response.starts_with(b"HTTP/1.1 200") || response.starts_with(b"HTTP/1.0 200")) {
        stats.non200.set(stats.non200.get() + 1);
    }
}

async fn one_close(
    addr: &str,
    request: &[u8],
    buf: &mut [u8],
    stats: &Stats,
) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    stats.connections.set(stats.connections.get() + 1);
    s.set_nodelay(true)?;
    s.write_all(request).await?;
    let mut n = 0;
    loop {
        if n == buf.len() {
            n = 64; // keep the status line; the rest is only drained
        }
        let r = s.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    count(stats, &buf[..n]);
    Ok(())
}

/// Header end and Content-Length of a response head in `b`, if complete.
fn parse_head(b: &[u8]) -> Option<(usize, usize)> {
    let end = b.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&b[..end]).ok()?;
    let len = head
        .split("\r\n")
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    Some((end, len))
}

async fn keepalive_loop(
    addr: &str,
    request: &[u8],
    buf: &mut [u8],
    stats: &Stats,
    deadline: Instant,
) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    stats.connections.set(stats.connections.get() + 1);
    s.set_nodelay(true)?;
    while Instant::now() < deadline {
        s.write_all(request).await?;
        let mut n = 0;
        let total = loop {
            let r = s.read(&mut buf[n..]).await?;
            if r == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            n += r;
            if let Some((head, len)) = parse_head(&buf[..n]) {
                break head + len;
            }
            if n == buf.len() {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
        };
        if total > buf.len() {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        while n < total {
            let r = s.read(&mut buf[n..total]).await?;
            if r == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            n += r;
        }
        count(stats, &buf[..n]);
    }
    Ok(())
}
