//! A minimal HTTP/1.1 load generator for `scripts/bench-responder.sh`: the same
//! GET over and over from N concurrent connections on one thread, either with a
//! new TCP connection per request (`close`) or with keep-alive.
//!
//! ```text
//! cargo run --release -p chop-responder --example loadgen -- \
//!     HOST:PORT PATH [--connections 32] [--duration 10] [--mode close|keepalive]
//!     [--flood-rate N --flood-paths FILE [--flood-connections 16]]
//! loadgen --print-random CA_PEM N
//! ```
//!
//! With `--flood-rate N`, besides the closed-loop legitimate load on `PATH`
//! (`--connections 0`: none), a second group of keep-alive connections offers a
//! flood at a fixed rate of N requests per second (open loop: each connection
//! sends on its own ticks, catching up when the server is slow), GETs cycling
//! through the paths in `FILE` (one per line). The flood's own line follows the
//! legitimate one: `flood requests=… rps=… errors=… non200=… unsigned=…`.
//! `--print-random CA_PEM N` prints N GET paths, each for a fresh random serial
//! under that CA (never issued; no two alike, so no response cache helps): made
//! ahead of the run, so that a random flood costs the client what a flood of
//! known serials costs.
//!
//! Why not only wrk: wrk opens (and at once closes) a probe connection before
//! its run, and OpenSSL 3.0's `openssl ocsp -port` responder then spins on that
//! connection's EOF forever and answers nothing. This tool sends nothing but the
//! requests, so all three servers are measured with the same client.
//!
//! Prints one line: `requests=… seconds=… rps=… connections=… errors=… non200=…`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::{Cell, RefCell};
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
    /// Answers that are an unsigned OCSPResponse (5 octets: an error status).
    unsigned: Cell<u64>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().expect("HOST:PORT");
    if addr == "--print-random" {
        let pem = std::fs::read(args.next().expect("CA_PEM")).unwrap();
        let ca = x509_cert::Certificate::load_pem_chain(&pem).unwrap();
        let n: usize = args.next().expect("N").parse().unwrap();
        let mut out = String::with_capacity(n * 128);
        for _ in 0..n {
            let serial = ca::serial::Serial::random().unwrap();
            let der = ca::ocsp::build_request(&ca[0], &[serial], ca::ocsp::CertIdHash::Sha1, None)
                .unwrap();
            out.push_str(&responder::fixture::get_path(&der));
            out.push('\n');
        }
        print!("{out}");
        return;
    }
    let path = args.next().expect("PATH");
    let (mut conns, mut secs, mut keepalive) = (32usize, 10f64, false);
    let (mut flood_rate, mut flood_conns, mut flood) = (0f64, 16usize, None);
    while let Some(f) = args.next() {
        let v = args.next().expect("flag value");
        match f.as_str() {
            "--connections" => conns = v.parse().unwrap(),
            "--duration" => secs = v.parse().unwrap(),
            "--mode" => keepalive = v == "keepalive",
            "--flood-rate" => flood_rate = v.parse().unwrap(),
            "--flood-connections" => flood_conns = v.parse().unwrap(),
            "--flood-paths" => {
                let text = std::fs::read_to_string(&v).unwrap();
                let paths: Vec<String> = text.lines().map(str::to_owned).collect();
                assert!(!paths.is_empty(), "{v}: no paths");
                flood = Some(paths);
            }
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
    let flood_stats = Rc::new(Stats::default());
    if flood_rate > 0.0 {
        let flood = Rc::new(flood.expect("--flood-rate needs --flood-paths"));
        let counter = Rc::new(RefCell::new(0usize));
        let period = Duration::from_secs_f64(flood_conns as f64 / flood_rate);
        for c in 0..flood_conns {
            let (addr, stats, flood, counter) = (
                addr.clone(),
                flood_stats.clone(),
                flood.clone(),
                counter.clone(),
            );
            local.spawn_local(async move {
                // Spread the connections' ticks over one period.
                let first =
                    tokio::time::Instant::now() + period.mul_f64(c as f64 / flood_conns as f64);
                let mut tick = tokio::time::interval_at(first, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut buf = vec![0u8; 16 * 1024];
                while Instant::now() < deadline {
                    let r = flood_loop(
                        &addr, &flood, &counter, &mut tick, &mut buf, &stats, deadline,
                    )
                    .await;
                    if r.is_err() {
                        stats.errors.set(stats.errors.get() + 1);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            });
        }
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
    if flood_rate > 0.0 {
        let n = flood_stats.requests.get();
        println!(
            "flood requests={n} rps={:.0} offered={flood_rate:.0} errors={} non200={} unsigned={}",
            n as f64 / elapsed,
            flood_stats.errors.get(),
            flood_stats.non200.get(),
            flood_stats.unsigned.get()
        );
    }
}

/// One keep-alive connection of the flood: a request per tick.
async fn flood_loop(
    addr: &str,
    flood: &[String],
    counter: &RefCell<usize>,
    tick: &mut tokio::time::Interval,
    buf: &mut [u8],
    stats: &Stats,
    deadline: Instant,
) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    stats.connections.set(stats.connections.get() + 1);
    s.set_nodelay(true)?;
    loop {
        tick.tick().await;
        if Instant::now() >= deadline {
            return Ok(());
        }
        let i = {
            let mut c = counter.borrow_mut();
            *c += 1;
            *c
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\n\r\n",
            flood[i % flood.len()]
        );
        s.write_all(request.as_bytes()).await?;
        read_response(&mut s, buf, stats).await?;
    }
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
        read_response(&mut s, buf, stats).await?;
    }
    Ok(())
}

/// Read one response (head and Content-Length body) from a keep-alive connection.
async fn read_response(s: &mut TcpStream, buf: &mut [u8], stats: &Stats) -> std::io::Result<()> {
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
    if parse_head(&buf[..n]).is_some_and(|(head, len)| len == 5 && n == head + 5) {
        stats.unsigned.set(stats.unsigned.get() + 1);
    }
    count(stats, &buf[..n]);
    Ok(())
}
