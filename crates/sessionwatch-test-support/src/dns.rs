//! A small DNS server over UDP on loopback, whose answers a test changes while it runs: A, AAAA
//! and SRV records with a TTL of 0, NXDOMAIN for names it does not know, and SERVFAIL on demand
//! (a resolver that fails). It understands only what a stub resolver asks: one question, no
//! compression in the question, class IN.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;

#[derive(Debug, Default)]
struct Zone {
    ips: HashMap<String, Vec<IpAddr>>,
    srv: HashMap<String, Vec<(String, u16)>>,
}

#[derive(Debug, Default)]
struct Shared {
    zone: Mutex<Zone>,
    failing: AtomicBool,
    queries: AtomicU64,
}

/// A running DNS server; it stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    /// Binds `127.0.0.1:0` and answers from an empty zone.
    pub async fn start() -> io::Result<Self> {
        let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let addr = socket.local_addr()?;
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(serve(socket, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// Where it listens (for a resolver setting).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The addresses `name` has from now on (A for IPv4, AAAA for IPv6), in the order given.
    pub fn set_ips(&self, name: &str, ips: &[IpAddr]) {
        self.zone().ips.insert(key(name), ips.to_vec());
    }

    /// The SRV records of `name` from now on: each target's name and port.
    pub fn set_srv(&self, name: &str, targets: &[(&str, u16)]) {
        let records = targets.iter().map(|(t, p)| (key(t), *p)).collect();
        self.zone().srv.insert(key(name), records);
    }

    /// Answer every question with SERVFAIL (`true`) or from the zone again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// Questions received so far.
    pub fn queries(&self) -> u64 {
        self.shared.queries.load(Ordering::SeqCst)
    }

    fn zone(&self) -> std::sync::MutexGuard<'_, Zone> {
        self.shared.zone.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn serve(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        shared.queries.fetch_add(1, Ordering::SeqCst);
        if let Some(answer) = answer(&buf[..n], &shared) {
            let _ = socket.send_to(&answer, peer).await;
        }
    }
}

/// The question's name, type and where the question ends.
fn question(query: &[u8]) -> Option<(String, u16, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).into_owned());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    Some((key(&labels.join(".")), qtype, at + 4))
}

fn encode_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn answer(query: &[u8], shared: &Shared) -> Option<Vec<u8>> {
    let (name, qtype, end) = question(query)?;
    let mut records: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut rcode = 0;
    if shared.failing.load(Ordering::SeqCst) {
        rcode = RCODE_SERVFAIL;
    } else {
        let zone = shared.zone.lock().unwrap_or_else(|e| e.into_inner());
        let known = zone.ips.contains_key(&name) || zone.srv.contains_key(&name);
        match qtype {
            TYPE_A | TYPE_AAAA => {
                for ip in zone.ips.get(&name).into_iter().flatten() {
                    match (ip, qtype) {
                        (IpAddr::V4(v4), TYPE_A) => records.push((TYPE_A, v4.octets().to_vec())),
                        (IpAddr::V6(v6), TYPE_AAAA) => {
                            records.push((TYPE_AAAA, v6.octets().to_vec()));
                        }
                        _ => {}
                    }
                }
            }
            TYPE_SRV => {
                for (target, port) in zone.srv.get(&name).into_iter().flatten() {
                    // Priority 10, weight 100, as Kubernetes publishes them.
                    let mut data = vec![0, 10, 0, 100];
                    data.extend_from_slice(&port.to_be_bytes());
                    encode_name(&mut data, target);
                    records.push((TYPE_SRV, data));
                }
            }
            _ => {}
        }
        if !known {
            rcode = RCODE_NXDOMAIN;
        }
    }
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[0..2]);
    // A response, recursion desired and available, the query's opcode (0), and the rcode.
    out.extend_from_slice(&(0x8180 | rcode).to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(query.get(12..end)?);
    for (rtype, data) in records {
        // The question's name, by pointer.
        out.extend_from_slice(&[0xC0, 12]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(out)
}
